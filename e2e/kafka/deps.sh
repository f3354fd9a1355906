#!/usr/bin/env bash
# Installs the Kafka broker the tests and the local cluster run and prints its jars'
# folder: Apache Kafka 4.4.0 as the jars e2e/kafka/pom.xml pins, copied from Maven
# Central (through ~/.m2) into $SLUICE_CACHE/kafka-4.4.0/libs with Maven's
# dependency:copy-dependencies (first run only: about 15 s on 2 cores with an empty
# ~/.m2, which gets 68 MB, the jars and Maven's plugin; 7 s when ~/.m2 has them).
# The jars take 44 MB.
#   deps.sh           install them when missing (or copied from another pom.xml), print the folder
#   deps.sh --cached  print it only if installed from this pom.xml; never download
#
# Why a real broker: what the Kafka tests must prove (partitions, consumer group
# offsets, transactions, a broker restart) is what a mock would assume. The jars run
# as one JVM in KRaft mode, broker and controller in one process
# (process.roles=broker,controller) on a log directory formatted by
# kafka.tools.StorageTool: no ZooKeeper (Kafka 4 has none), no Docker, no
# distribution tarball (Maven Central is reachable where downloads.apache.org may
# not be); the same jars hold the tools (TopicCommand, the console producer and
# consumer). It needs Java 17 or newer (`java` on PATH, or JAVA_HOME) and Maven
# (`mvn`, or MVN) for the download.
set -euo pipefail

KAFKA_VERSION=4.4.0
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="${SLUICE_CACHE:-$HOME/.cache/sluice}/kafka-$KAFKA_VERSION"
libs="$root/libs"
wanted=$(sha256sum "$here/pom.xml" | cut -d' ' -f1)

if [[ "$(cat "$root/.pom-sha256" 2>/dev/null)" != "$wanted" || ! -d $libs ]]; then
    [[ ${1:-} == --cached ]] && exit 1
    echo "kafka-deps: copying Kafka $KAFKA_VERSION's jars into $libs (first run only, about 15 s)" >&2
    mkdir -p "$root"
    # Into a fresh folder first, so an interrupted copy leaves no half set of jars.
    rm -rf "$root/libs.new"
    # Maven's output only when it fails (Debian's 3.8.7 prints colour codes even with -q).
    if ! out=$("${MVN:-mvn}" -q -B -f "$here/pom.xml" dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$root/libs.new" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "kafka-deps: error: Maven could not copy the jars (it needs Maven Central, or the jars in ~/.m2)" >&2
        exit 1
    fi
    rm -rf "$libs"
    mv "$root/libs.new" "$libs"
    echo "$wanted" >"$root/.pom-sha256"
fi
echo "$libs"
