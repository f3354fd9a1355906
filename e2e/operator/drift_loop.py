"""Monitor -> Detect drift -> Retrain, end to end (run by e2e/operator/monitoring.sh).

Drives a monitored InferenceService (`spec.monitoring.drift` and `onDrift` set)
with real rows over one keep-alive HTTP connection and watches what the operator
makes of them, through kubectl:

1. training-like rows (the holdout set): `InputDrift` must settle at False and stay
   False (every reading counted: the false alarms);
2. rows with two features shifted: `InputDrift` must turn True naming exactly those
   two features, and exactly one retraining Job must be created, run and succeed,
   however long the episode lasts;
3. training-like rows again: `InputDrift` must clear, with no new Job;
4. a second shift: a second episode and a second Job, so two in all.

Prints the detection time, the time to clear and the false-alarm count.
"""

import csv
import http.client
import json
import subprocess
import sys
import time
import urllib.parse

URL, HOLDOUT, KUBECTL, ISVC, SHIFTED = sys.argv[1:6]
SHIFTED = SHIFTED.split(",")
SHIFT_FACTOR = 1.8
ROWS_PER_REQUEST = 10

reader = csv.DictReader(open(HOLDOUT))
columns = [c for c in reader.fieldnames if c != "target"]
holdout = [[float(row[c]) for c in columns] for row in reader]
shifted_at = [columns.index(c) for c in SHIFTED]
shifted = [[v * SHIFT_FACTOR if i in shifted_at else v for i, v in enumerate(r)] for r in holdout]

target = urllib.parse.urlsplit(URL)
connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)


def say(message):
    print(f"sluice: {message}", file=sys.stderr, flush=True)


def post(rows):
    """One request of `rows`, on the kept-alive connection (reopened on a reset)."""
    global connection
    body = json.dumps({"inputs": [{"name": "float_input", "datatype": "FP32",
                                   "shape": [len(rows), len(columns)], "data": rows}]})
    for attempt in range(20):
        try:
            connection.request("POST", target.path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200:
                sys.exit(f"FAIL: the model answered {response.status}: {answer[:300]!r}")
            return
        except (ConnectionError, http.client.HTTPException, OSError):
            connection.close()
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            time.sleep(0.5)
    sys.exit("FAIL: the Service refused 20 connections in a row")


def kubectl(*args):
    return subprocess.run([KUBECTL, *args], check=True, capture_output=True, text=True).stdout


def isvc():
    return json.loads(kubectl("get", "isvc", ISVC, "-o", "json"))


def input_drift(status):
    for c in status.get("conditions", []):
        if c["type"] == "InputDrift":
            return c
    return {"status": "Absent", "reason": "", "message": ""}


def jobs():
    listed = json.loads(kubectl("get", "jobs", "-l",
                                f"serving.sluice.dev/inferenceservice={ISVC},app.kubernetes.io/component=retraining",
                                "-o", "json"))["items"]
    return sorted(j["metadata"]["name"] for j in listed)


def drive(rows, until, deadline_s, what):
    """Sends `rows` round and round (a request every 0.2 s) and reads the
    InferenceService every 2 s, until `until(status)` holds; returns the seconds
    it took and every InputDrift status seen."""
    started = time.time()
    seen = []
    index = 0
    next_read = 0.0
    while True:
        chunk = [rows[(index + i) % len(rows)] for i in range(ROWS_PER_REQUEST)]
        index += ROWS_PER_REQUEST
        post(chunk)
        now = time.time()
        if now >= next_read:
            next_read = now + 2
            status = isvc().get("status", {})
            seen.append(input_drift(status)["status"])
            if until(status):
                return now - started, seen
        if now - started > deadline_s:
            status = isvc().get("status", {})
            sys.exit(f"FAIL: {what} not reached within {deadline_s} s; InputDrift is "
                     f"{input_drift(status)}, status.drift {status.get('drift')}")
        time.sleep(0.2)


def after(seconds):
    """A condition that holds once `seconds` have passed."""
    end = time.time() + seconds
    return lambda status: time.time() >= end


def drifting(status):
    return input_drift(status)["status"] == "True"


def quiet(status):
    return input_drift(status)["status"] == "False"


# 1. Training-like traffic: settles at NoDrift, then stays there.
# Every reading counts, from the first (the window still filling) on.
_, settling = drive(holdout, quiet, 120, "InputDrift=False on training-like rows")
_, normal = drive(holdout, after(40), 60, "40 s of training-like rows")
readings = settling + normal
false_alarms = readings.count("True")
if false_alarms or jobs():
    sys.exit(f"FAIL: {false_alarms} of {len(readings)} readings of training-like traffic said InputDrift=True; jobs {jobs()}")
say(f"training-like rows: InputDrift=True in 0 of {len(readings)} readings (0 false alarms; "
    f"{len(normal)} of them over 40 s once settled), no Job")

# 2. Two features shifted: detected, named, one Job that runs and succeeds.
def named(message):
    """The features a drift message names."""
    if " drift from the profile: " not in message:
        return ""
    return message.split(" drift from the profile: ")[1].split("; since")[0]


def names_the_shifted(status):
    """InputDrift is True and names both shifted features. The window fills with
    shifted rows gradually, so the first True reading may name one of them only."""
    message = input_drift(status).get("message", "")
    return drifting(status) and all(f"{c} (" in named(message) for c in SHIFTED)


detected, _ = drive(shifted, drifting, 180, "InputDrift=True on shifted rows")
drive(shifted, names_the_shifted, 60, f"InputDrift naming {SHIFTED}")
condition = input_drift(isvc()["status"])
message = condition["message"]
if not message.startswith(f"{len(SHIFTED)} of {len(columns)} features") or any(f"{c} (" not in named(message) for c in SHIFTED):
    sys.exit(f"FAIL: InputDrift does not name exactly the shifted features {SHIFTED}: {message}")
say(f"shifted {', '.join(SHIFTED)} by x{SHIFT_FACTOR}: InputDrift=True {detected:.1f} s after the first shifted row: {message}")


def retraining(status):
    return ((status.get("drift") or {}).get("retraining") or {})


_, _ = drive(shifted, lambda s: retraining(s).get("outcome") in ("Succeeded", "Failed"), 180,
             "the retraining Job finishing")
first = retraining(isvc()["status"])
if first["outcome"] != "Succeeded":
    sys.exit(f"FAIL: the retraining Job {first['job']} {first['outcome']}")
# The episode goes on: still one Job after several more checks.
_, _ = drive(shifted, after(20), 60, "20 s more of shifted rows")
if jobs() != [first["job"]]:
    sys.exit(f"FAIL: one drift episode made Jobs {jobs()}, not just {first['job']}")
pod = kubectl("get", "pods", "-l", f"job-name={first['job']}", "-o",
              "jsonpath={.items[0].metadata.name}_{.items[0].metadata.uid}").strip()
say(f"one episode, one Job: {first['job']} Succeeded (pod {pod.split('_')[0]}), still the only one 20 s later")
print(pod)

# 3. Back to training-like rows: clears, no new Job.
cleared, _ = drive(holdout, quiet, 180, "InputDrift=False after traffic returned")
if jobs() != [first["job"]]:
    sys.exit(f"FAIL: clearing made Jobs {jobs()}")
say(f"traffic back to training-like rows: InputDrift=False after {cleared:.1f} s "
    f"(the window refills, then clearAfterSeconds): {input_drift(isvc()['status'])['message']}")

# 4. A second episode gets its own Job.
again, _ = drive(shifted, lambda s: len(jobs()) == 2, 180, "a second retraining Job for a second episode")
if not drifting(isvc()["status"]):
    sys.exit("FAIL: a second Job without InputDrift=True")
say(f"second shift: a second episode and its Job after {again:.1f} s; Jobs {jobs()}")
