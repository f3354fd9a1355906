package main

// The health checks against their health_test.yaml, as Argo CD's own test
// (util/lua/health_test.go TestLuaHealthScript) runs its bundled checks: every
// health.lua under the tree, every case of the health_test.yaml beside it, the
// object read with sigs.k8s.io/yaml, the script picked by the object's group
// and kind, and the whole result (status, message, deletionMessage) compared.
//
// Each case runs twice: with Lua's standard libraries open (as Argo CD runs
// its bundled checks, and as upstream's test does) and closed (as Argo CD runs
// a resource.customizations.health key of argocd-cm by default).
//
// SLUICE_ARGOCD_CUSTOMIZATIONS points the tests at another tree, and
// SLUICE_ARGOCD_CM at another argocd-cm patch.

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// healthTests is a health_test.yaml.
type healthTests struct {
	Tests []struct {
		InputPath    string        `json:"inputPath"`
		HealthStatus *HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

// kindDir is one <group>/<Kind> directory of the tree that has a health.lua.
type kindDir struct {
	path        string // on disk
	group, kind string
}

// kindDirs lists the checks of the tree at dir.
func kindDirs(t *testing.T, dir string) []kindDir {
	t.Helper()
	var dirs []kindDir
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || d.Name() != "health.lua" {
			return nil
		}
		rel, err := filepath.Rel(dir, filepath.Dir(path))
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		group, kind := "", parts[len(parts)-1]
		if len(parts) == 2 {
			group = parts[0]
		}
		dirs = append(dirs, kindDir{path: filepath.Dir(path), group: group, kind: kind})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) == 0 {
		t.Fatalf("no health.lua under %s", dir)
	}
	return dirs
}

// readObject reads one test input as upstream's getObj does.
func readObject(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	obj := make(map[string]any)
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return obj
}

func describe(h *HealthStatus) string {
	if h == nil {
		return "no health (nil)"
	}
	s := "status " + string(h.Status) + ", message " + quote(h.Message)
	if h.DeletionMessage != "" {
		s += ", deletionMessage " + quote(h.DeletionMessage)
	}
	return s
}

func quote(s string) string { return "\"" + s + "\"" }

func TestHealthChecks(t *testing.T) {
	dir := customizationsDir()
	for _, kd := range kindDirs(t, dir) {
		raw, err := os.ReadFile(filepath.Join(kd.path, "health_test.yaml"))
		if err != nil {
			t.Errorf("%s/%s has a health.lua without its health_test.yaml: %v", kd.group, kd.kind, err)
			continue
		}
		var cases healthTests
		if err := yaml.UnmarshalStrict(raw, &cases); err != nil {
			t.Fatalf("%s/health_test.yaml: %v", kd.path, err)
		}
		if len(cases.Tests) == 0 {
			t.Errorf("%s/health_test.yaml has no tests", kd.path)
		}
		used := map[string]bool{}
		for _, c := range cases.Tests {
			input := filepath.Join(kd.path, filepath.FromSlash(c.InputPath))
			used[filepath.Clean(input)] = true
			for _, libs := range []struct {
				name string
				open bool
			}{{"open-libs", true}, {"argocd-cm", false}} {
				name := filepath.ToSlash(filepath.Join(kd.group, kd.kind, c.InputPath)) + "/" + libs.name
				t.Run(name, func(t *testing.T) {
					obj := readObject(t, input)
					group, kind := groupKind(obj)
					if group != kd.group || kind != kd.kind {
						t.Fatalf("%s is a %s, not a %s", c.InputPath, configMapKey(group, kind), configMapKey(kd.group, kd.kind))
					}
					check, err := treeChecks{dir: dir, useOpenLibs: libs.open}.find(group, kind)
					if err != nil {
						t.Fatal(err)
					}
					got, err := executeHealthLua(obj, check.script, libs.open)
					if err != nil {
						t.Fatalf("the check failed: %v", err)
					}
					if !reflect.DeepEqual(got, c.HealthStatus) {
						t.Errorf("got  %s\nwant %s", describe(got), describe(c.HealthStatus))
					}
				})
			}
		}
		// A capture dropped into testdata/ without a case is a forgotten test.
		inputs, _ := filepath.Glob(filepath.Join(kd.path, "testdata", "*.yaml"))
		for _, input := range inputs {
			if !used[filepath.Clean(input)] {
				t.Errorf("%s is not an inputPath of %s/health_test.yaml", input, kd.path)
			}
		}
	}
}

// TestConfigMapPatch checks the argocd-cm patch against the tree: one
// resource.customizations.health.<group>_<Kind> key per health.lua, holding
// it byte for byte, and nothing else that Argo CD would read as a health check
// (`make argocd-cm` renders it; `make test-argocd-health` also diffs it).
func TestConfigMapPatch(t *testing.T) {
	path := os.Getenv("SLUICE_ARGOCD_CM")
	if path == "" {
		path = "../argocd-cm-patch.yaml"
	}
	cm, err := readConfigMap(path)
	if errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is missing: run `make argocd-cm`", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, kd := range kindDirs(t, customizationsDir()) {
		key := configMapKey(kd.group, kd.kind)
		want[key] = true
		script, err := os.ReadFile(filepath.Join(kd.path, "health.lua"))
		if err != nil {
			t.Fatal(err)
		}
		check, err := cm.find(kd.group, kd.kind)
		if err != nil {
			t.Errorf("%v: run `make argocd-cm`", err)
			continue
		}
		if check.script != string(script) {
			t.Errorf("%s differs from %s/health.lua: run `make argocd-cm`", check.where, kd.path)
		}
		if check.useOpenLibs {
			t.Errorf("%s: the checks need no standard library; keep useOpenLibs false", check.where)
		}
	}
	var extra []string
	for key, check := range cm.overrides {
		if check.script != "" && !want[key] {
			extra = append(extra, key)
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("%s has health checks without a health.lua: %v", path, extra)
	}
}
