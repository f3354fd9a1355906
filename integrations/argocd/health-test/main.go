// Command sluice-argocd-health prints the health Argo CD gives Kubernetes
// objects under Sluice's health checks, one line per object:
//
//	<Status>\t<message>
//
// It runs the checks the way Argo CD v3 does (lua.go says how faithfully), so
// scripts can assert what Argo CD would show for live objects:
//
//	kubectl get isvc iris -o yaml | sluice-argocd-health -
//	kubectl get isvc,bi -A -o json | sluice-argocd-health -names -
//	go run . ../resource_customizations/serving.sluice.dev/InferenceService/testdata/healthy.yaml
//
// The input is YAML or JSON: one object, several YAML documents, or a List
// (what kubectl prints for several objects), one line per item. Newlines and
// tabs in a message are printed as \n and \t.
//
// The checks come from a resource_customizations tree (-customizations, run
// with Lua's standard libraries closed unless -open-libs, as Argo CD runs an
// argocd-cm check by default) or from an argocd-cm ConfigMap (-cm: the
// rendered patch, or `kubectl -n argocd get cm argocd-cm -o yaml` saved to a
// file), whose useOpenLibs keys then decide.
//
// Exit status: 0 when every object got its health, 1 when a check failed or
// an object has none (its line says Unknown and why, as Argo CD shows a failed
// check), 2 for bad arguments or input.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// defaultCustomizations is set by `make argocd-health-bin` (-ldflags -X) to the
// checkout's resource_customizations directory.
var defaultCustomizations = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// customizationsDir is -customizations' default: $SLUICE_ARGOCD_CUSTOMIZATIONS,
// else the directory stamped at build time, else ../resource_customizations
// (`go run .` in this folder).
func customizationsDir() string {
	if dir := os.Getenv("SLUICE_ARGOCD_CUSTOMIZATIONS"); dir != "" {
		return dir
	}
	if defaultCustomizations != "" {
		return defaultCustomizations
	}
	return "../resource_customizations"
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("sluice-argocd-health", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("customizations", customizationsDir(),
		"resource_customizations directory: <dir>/<group>/<Kind>/health.lua")
	configMap := flags.String("cm", "",
		"read the checks from this argocd-cm ConfigMap (YAML or JSON) instead of -customizations")
	openLibs := flags.Bool("open-libs", false,
		"with -customizations, open Lua's standard libraries (as for Argo CD's bundled checks)")
	names := flags.Bool("names", false, "start each line with <Kind>/<namespace>/<name> and a tab")
	flags.Usage = func() {
		fmt.Fprintf(stderr, "usage: sluice-argocd-health [flags] FILE|-\n"+
			"Prints <Status>\\t<message> per object, as Argo CD's health checks judge it.\n")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		return 2
	}
	if flags.NArg() != 1 {
		flags.Usage()
		return 2
	}

	var source checks = treeChecks{dir: *dir, useOpenLibs: *openLibs}
	if *configMap != "" {
		cm, err := readConfigMap(*configMap)
		if err != nil {
			fmt.Fprintf(stderr, "sluice-argocd-health: %v\n", err)
			return 2
		}
		source = cm
	}

	input := flags.Arg(0)
	var raw []byte
	var err error
	if input == "-" {
		raw, err = io.ReadAll(stdin)
	} else {
		raw, err = os.ReadFile(input)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sluice-argocd-health: %v\n", err)
		return 2
	}
	objects, err := decodeObjects(raw)
	if err != nil {
		fmt.Fprintf(stderr, "sluice-argocd-health: %s: %v\n", input, err)
		return 2
	}

	status := 0
	escape := strings.NewReplacer("\n", `\n`, "\t", `\t`)
	for _, obj := range objects {
		health, err := evaluate(source, obj)
		if err != nil {
			fmt.Fprintf(stderr, "sluice-argocd-health: %s: %v\n", objectName(obj), err)
			status = 1
		}
		if *names {
			fmt.Fprintf(stdout, "%s\t", objectName(obj))
		}
		if health == nil {
			// The check returned nil: Argo CD shows no health for the object.
			fmt.Fprintf(stderr, "sluice-argocd-health: %s: the check returned no health\n", objectName(obj))
			health = &HealthStatus{}
		}
		fmt.Fprintf(stdout, "%s\t%s\n", health.Status, escape.Replace(health.Message))
	}
	return status
}

// evaluate is obj's health under its check from source.
func evaluate(source checks, obj map[string]any) (*HealthStatus, error) {
	c, err := source.find(groupKind(obj))
	if err != nil {
		return &HealthStatus{Status: HealthStatusUnknown, Message: err.Error()}, err
	}
	health, err := resourceHealth(obj, c.script, c.useOpenLibs)
	if err != nil {
		return health, fmt.Errorf("%s: %w", c.where, err)
	}
	return health, nil
}

// objectName is <Kind>/<namespace>/<name> (<Kind>/<name> without a namespace).
func objectName(obj map[string]any) string {
	_, kind := groupKind(obj)
	metadata, _ := obj["metadata"].(map[string]any)
	name, _ := metadata["name"].(string)
	if namespace, _ := metadata["namespace"].(string); namespace != "" {
		return kind + "/" + namespace + "/" + name
	}
	return kind + "/" + name
}

// decodeObjects reads objects from YAML or JSON: one object, YAML documents
// separated by `---` lines, and the items of any List among them. Numbers
// decode as float64 and reach Lua as numbers, as from Argo CD's cache.
func decodeObjects(raw []byte) ([]map[string]any, error) {
	var objects []map[string]any
	for _, document := range splitDocuments(raw) {
		var obj map[string]any
		if err := yaml.Unmarshal(document, &obj); err != nil {
			return nil, err
		}
		if obj == nil {
			continue
		}
		items, isList := obj["items"].([]any)
		if kind, _ := obj["kind"].(string); isList && strings.HasSuffix(kind, "List") {
			for i, item := range items {
				itemObj, ok := item.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("item %d of the %s is not an object", i, kind)
				}
				objects = append(objects, itemObj)
			}
			continue
		}
		objects = append(objects, obj)
	}
	if len(objects) == 0 {
		return nil, fmt.Errorf("no object in the input")
	}
	return objects, nil
}

// splitDocuments splits YAML at its `---` document separators.
func splitDocuments(raw []byte) [][]byte {
	var documents [][]byte
	var current []byte
	for _, line := range bytes.SplitAfter(raw, []byte("\n")) {
		trimmed := bytes.TrimRight(line, " \t\r\n")
		if bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(trimmed, []byte("--- ")) {
			documents = append(documents, current)
			current = nil
			continue
		}
		current = append(current, line...)
	}
	return append(documents, current)
}
