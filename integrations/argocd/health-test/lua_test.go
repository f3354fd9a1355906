package main

// The VM itself behaves as Argo CD's does (lua.go lists what it mirrors).

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

var object = map[string]any{
	"apiVersion": "serving.sluice.dev/v1alpha1",
	"kind":       "InferenceService",
	"metadata":   map[string]any{"name": "iris", "generation": int64(3)},
	"status":     map[string]any{"observedGeneration": float64(3), "weight": json.Number("25")},
}

func TestResultsAreReadAsArgoCDReadsThem(t *testing.T) {
	for _, c := range []struct {
		name   string
		script string
		want   *HealthStatus
		err    string
	}{
		{"a status and a message", `return {status = "Degraded", message = "why"}`,
			&HealthStatus{Status: HealthStatusDegraded, Message: "why"}, ""},
		{"every valid code", `return {status = "Missing"}`, &HealthStatus{Status: HealthStatusMissing}, ""},
		{"an invalid code is Unknown", `return {status = "Broken", message = "x"}`,
			&HealthStatus{Status: HealthStatusUnknown, Message: invalidHealthStatus}, ""},
		{"codes are case-sensitive", `return {status = "healthy"}`,
			&HealthStatus{Status: HealthStatusUnknown, Message: invalidHealthStatus}, ""},
		{"an empty table is an empty status", `return {}`, &HealthStatus{}, ""},
		{"a number where a string belongs is an empty status too", `return {status = 1}`, &HealthStatus{}, ""},
		{"deletionMessage is kept", `return {status = "Progressing", deletionMessage = "d"}`,
			&HealthStatus{Status: HealthStatusProgressing, DeletionMessage: "d"}, ""},
		{"nil is no health", `return nil`, nil, ""},
		{"nothing is no health", `local x = 1`, nil, ""},
		{"a string is refused", `return "Healthy"`, nil, "expect table output from Lua script, not string"},
		{"a run-time error has no stack trace", `return obj.nothing.here`, nil, "attempt to index"},
		{"a syntax error", `return {`, nil, "<string>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := executeHealthLua(object, c.script, false)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				if strings.Contains(err.Error(), "stack traceback") {
					t.Errorf("the error keeps Lua's stack trace: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %s, want %s", describe(got), describe(c.want))
			}
		})
	}
}

func TestObjIsConvertedAsArgoCDConvertsIt(t *testing.T) {
	script := `
		local hs = {status = "Healthy"}
		-- int64 (from the API server) and float64 (from YAML) compare equal.
		if obj.metadata.generation ~= obj.status.observedGeneration then hs.status = "Degraded" end
		-- json.Number becomes a string.
		if type(obj.status.weight) ~= "string" then hs.status = "Degraded" end
		hs.message = obj.metadata.name .. " " .. obj.metadata.generation
		return hs`
	got, err := executeHealthLua(object, script, false)
	if err != nil {
		t.Fatal(err)
	}
	if want := (&HealthStatus{Status: HealthStatusHealthy, Message: "iris 3"}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %s, want %s", describe(got), describe(want))
	}
}

// Which libraries a check sees: argocd-cm's default closes the standard ones,
// leaving base, package, table and the safe os behind require("os"). With them
// open, the global os is gopher-lua's whole one, but require("os") still gives
// the safe one: reopening package empties package.loaded.
func TestLibraries(t *testing.T) {
	probe := `
		local seen = {}
		for _, name in ipairs({"string", "math", "io", "os", "debug", "coroutine", "table", "package"}) do
			if _G[name] ~= nil then table.insert(seen, name) end
		end
		local os = require("os")
		table.insert(seen, "require(os):" .. type(os.time()) .. "," .. type(os.date("!%Y-%m-%d")) .. "," .. tostring(os.exit ~= nil))
		return {status = "Healthy", message = table.concat(seen, " ")}`
	for _, c := range []struct {
		open bool
		want string
	}{
		{false, "table package require(os):number,string,false"},
		{true, "string math io os debug coroutine table package require(os):number,string,false"},
	} {
		got, err := executeHealthLua(object, probe, c.open)
		if err != nil {
			t.Fatal(err)
		}
		if got.Message != c.want {
			t.Errorf("useOpenLibs %v: libraries %q, want %q", c.open, got.Message, c.want)
		}
	}
}

func TestSafeOs(t *testing.T) {
	script := `
		local os = require("os")
		local t = os.date("!*t", 0)
		return {status = "Healthy", message = os.date("!%Y-%m-%d %H:%M:%S %%", 86400) .. " " .. t.year .. " " .. os.time({year = 2026, month = 12, day = 1})}`
	got, err := executeHealthLua(object, script, false)
	if err != nil {
		t.Fatal(err)
	}
	noon := time.Date(2026, 12, 1, 12, 0, 0, 0, time.Local).Unix()
	if want := "1970-01-02 00:00:00 % 1970 " + itoa(noon); got.Message != want {
		t.Errorf("got %q, want %q", got.Message, want)
	}
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

func TestAScriptThatRunsTooLongIsStopped(t *testing.T) {
	start := time.Now()
	_, err := executeHealthLua(object, `while true do end`, false)
	if err == nil || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Fatalf("error %v, want the 1 s deadline", err)
	}
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("stopped after %s", elapsed)
	}
}

func TestATerminatingObjectIsPendingDeletion(t *testing.T) {
	deleting := func(finalizers ...any) map[string]any {
		return map[string]any{"metadata": map[string]any{
			"name": "iris", "deletionTimestamp": "2026-12-01T10:00:00Z", "finalizers": finalizers}}
	}
	healthy := `return {status = "Healthy", message = "fine"}`
	for _, c := range []struct {
		name   string
		obj    map[string]any
		script string
		want   HealthStatus
	}{
		{"not deleting", map[string]any{"metadata": map[string]any{"name": "iris"}}, healthy,
			HealthStatus{Status: HealthStatusHealthy, Message: "fine"}},
		{"deleting", deleting(), healthy,
			HealthStatus{Status: HealthStatusProgressing, Message: "Pending deletion"}},
		{"held by a finalizer", deleting("serving.sluice.dev/cleanup"), healthy,
			HealthStatus{Status: HealthStatusProgressing, Message: "Pending deletion; blocked by finalizers: serving.sluice.dev/cleanup"}},
		{"held by Argo CD's hook finalizer", deleting(hookFinalizer), healthy,
			HealthStatus{Status: HealthStatusHealthy, Message: "fine"}},
		{"with a deletionMessage", deleting("x"), `return {status = "Degraded", message = "m", deletionMessage = "d"}`,
			HealthStatus{Status: HealthStatusDegraded, Message: "d"}},
	} {
		got, err := resourceHealth(c.obj, c.script, false)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%s: got %s, want %s", c.name, describe(got), describe(&c.want))
		}
	}
	got, err := resourceHealth(object, `error("no")`, false)
	if err == nil || got.Status != HealthStatusUnknown || !strings.Contains(got.Message, "no") {
		t.Errorf("a failing check: got %s, %v; want Unknown with the error", describe(got), err)
	}
}
