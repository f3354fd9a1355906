// Command argocd is a multi-call binary with two of Argo CD's commands, the
// application controller and the repo server: all that e2e/argocd/e2e.sh needs to
// sync Applications (no API server, UI, Dex, ApplicationSets or notifications).
//
// It picks the command as upstream's cmd/main.go does, by the name it runs under
// (a link named argocd-application-controller or argocd-repo-server, or
// ARGOCD_BINARY_NAME), or else by its first argument:
//
//	argocd application-controller --namespace argocd ...
//	argocd repo-server --port 18081 ...
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/log"
)

// commands: each command this binary links, by its upstream binary name.
var commands = map[string]func() *cobra.Command{
	common.CommandApplicationController: appcontroller.NewCommand,
	common.CommandRepoServer:            reposerver.NewCommand,
}

func init() {
	// As upstream: klog (client-go's logger) logs through logrus, with Argo CD's
	// --loglevel and --logformat.
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

// lookup: the command NAME selects, with or without the "argocd-" prefix.
func lookup(name string) (func() *cobra.Command, bool) {
	newCommand, ok := commands[name]
	if !ok {
		newCommand, ok = commands["argocd-"+strings.TrimPrefix(name, "argocd-")]
	}
	return newCommand, ok
}

func main() {
	// Upstream's main also calls util/grpc.DisableSRVLookups(), which undoes the SRV
	// lookups that google.golang.org/grpc/balancer/grpclb turns on when linked (by
	// the CLI and API server). This binary does not link grpclb, so the lookups stay
	// off, and that call would panic on finding them already off.
	name := filepath.Base(os.Args[0])
	if env := os.Getenv("ARGOCD_BINARY_NAME"); env != "" {
		name = env
	}
	args := os.Args[1:]
	newCommand, ok := commands[name]
	if !ok && len(args) > 0 {
		if newCommand, ok = lookup(args[0]); ok {
			args = args[1:]
		}
	}
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: %s application-controller|repo-server [FLAGS]\n"+
			"  (or run it as %s or %s, a link to it)\n",
			filepath.Base(os.Args[0]), common.CommandApplicationController, common.CommandRepoServer)
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(args)
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
