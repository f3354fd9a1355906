package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testdata(kind, file string) string {
	return filepath.Join(customizationsDir(), "serving.sluice.dev", kind, "testdata", file)
}

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// indent turns a YAML object into an item of a List.
func indent(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	first := true
	for _, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if first {
			out.WriteString("- " + line + "\n")
			first = false
		} else {
			out.WriteString("  " + line + "\n")
		}
	}
	return out.String()
}

func TestTheCommandPrintsOneLinePerObject(t *testing.T) {
	healthy := testdata("InferenceService", "healthy.yaml")
	code, out, errs := runCLI(t, "", healthy)
	if code != 0 || !strings.HasPrefix(out, "Healthy\trevision ") || strings.Count(out, "\n") != 1 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// What `kubectl get isvc,bi -o yaml` prints: a List.
	list := "apiVersion: v1\nkind: List\nmetadata:\n  resourceVersion: \"\"\nitems:\n" +
		indent(t, healthy) + indent(t, testdata("BatchInference", "degraded_failed_run.yaml"))
	code, out, errs = runCLI(t, list, "-names", "-")
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "InferenceService/default/iris\tHealthy\t") ||
		!strings.HasPrefix(lines[1], "BatchInference/default/broken\tDegraded\t") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}

	// JSON, and the checks read from the argocd-cm patch.
	json := `{"apiVersion": "serving.sluice.dev/v1alpha1", "kind": "BatchInference",
		"metadata": {"name": "b", "namespace": "ml", "generation": 1}, "spec": {}}`
	code, out, errs = runCLI(t, json, "-cm", "../argocd-cm-patch.yaml", "-")
	if code != 0 || out != "Progressing\tWaiting for sluice-operator to report status\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

func TestTheCommandSaysWhatItCannotJudge(t *testing.T) {
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
	code, out, _ := runCLI(t, pod, "-")
	if code != 1 || !strings.HasPrefix(out, "Unknown\tno health check for Pod") {
		t.Errorf("a kind without a check: exit %d, stdout %q", code, out)
	}
	if code, _, _ := runCLI(t, "", "-"); code != 2 {
		t.Errorf("no object: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, ""); code != 2 {
		t.Errorf("no argument: exit %d, want 2", code)
	}
}

func TestDocumentsAreSplitAtSeparators(t *testing.T) {
	objects, err := decodeObjects([]byte("a: 1\n---\n# only a comment\n--- \nb: 2\n"))
	if err != nil || len(objects) != 2 {
		t.Fatalf("got %v, %v", objects, err)
	}
}
