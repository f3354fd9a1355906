package main

// How Argo CD runs a resource health check, re-implemented small and faithful to
// github.com/argoproj/argo-cd/v3 v3.6.1 (the newest v3 release; v3.5.x differs
// only in the nil result noted at executeHealthLua and in having no
// deletionMessage):
//
//   - util/lua/lua.go, VM.runLuaWithResourceActionParameters and
//     loadCompiledFunction (lines 132-210):
//     the Lua state, the libraries it opens, the os replacement, the 1 s
//     timeout, the globals actionParams and obj, and the stack trace left out of
//     run-time errors;
//   - util/lua/lua.go, VM.ExecuteHealthLua (lines 212-246): the returned table,
//     encoded to JSON by layeh.com/gopher-json and decoded into a HealthStatus;
//     a status outside the six codes becomes Unknown;
//   - util/lua/lua.go, isValidHealthStatusCode and decodeValue (lines 671-715):
//     the six codes, and Go values to Lua values;
//   - util/lua/lua.go, GetHealthScript (line 250): an argocd-cm check runs with
//     its useOpenLibs, a bundled one with the libraries open (checks.go);
//   - util/lua/oslib_safe.go: the os library cut down to time and date
//     (written anew here: same functions, same registration);
//   - gitops-engine pkg/health/health.go: HealthStatusCode, HealthStatus,
//     GetResourceHealth's handling of a check's error and pendingDeletionHealth
//     (which the CLI applies to live objects);
//   - util/lua/health_test.go TestLuaHealthScript: how health_test.yaml is read
//     and compared (health_test.go).
//
// The two ways Argo CD runs a check differ only in useOpenLibs: its bundled
// checks (resource_customizations/, and upstream's util/lua/health_test.go) run
// with Lua's standard libraries open; an argocd-cm check
// (resource.customizations.health.<group>_<kind>) runs with them closed unless
// resource.customizations.useOpenLibs.<group>_<kind> is true.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

// HealthStatusCode is a resource's health (gitops-engine pkg/health).
type HealthStatusCode string

// The health codes a check may return.
const (
	HealthStatusUnknown     HealthStatusCode = "Unknown"
	HealthStatusProgressing HealthStatusCode = "Progressing"
	HealthStatusHealthy     HealthStatusCode = "Healthy"
	HealthStatusSuspended   HealthStatusCode = "Suspended"
	HealthStatusDegraded    HealthStatusCode = "Degraded"
	HealthStatusMissing     HealthStatusCode = "Missing"
)

// HealthStatus is what a check returns (gitops-engine pkg/health). The JSON
// names are the fields of the table a Lua check returns and of health_test.yaml.
type HealthStatus struct {
	Status  HealthStatusCode `json:"status,omitempty"`
	Message string           `json:"message,omitempty"`
	// DeletionMessage replaces the default message of a terminating resource
	// (Argo CD v3.6); Argo CD never shows it as a result's own field.
	DeletionMessage string `json:"deletionMessage,omitempty"`
}

// Argo CD's error messages (util/lua/lua.go).
const (
	incorrectReturnType = "expect %s output from Lua script, not %s"
	invalidHealthStatus = "Lua returned an invalid health status"
)

// runLua runs script with obj as the global `obj`, as
// VM.runLuaWithResourceActionParameters does (a health check has no action
// parameters, so actionParams is an empty table).
func runLua(obj map[string]any, script string, useOpenLibs bool) (*lua.LState, error) {
	l := lua.NewState(lua.Options{
		SkipOpenLibs: !useOpenLibs,
	})
	defer l.Close()
	// Opened in this order whatever useOpenLibs says, each called with its
	// name as the argument.
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs},
	} {
		if err := l.CallByParam(lua.P{
			Fn:      l.NewFunction(lib.open),
			NRet:    0,
			Protect: true,
		}, lua.LString(lib.name)); err != nil {
			panic(err)
		}
	}
	// `local os = require("os")` gets the safe os library.
	l.PreloadModule(lua.OsLibName, safeOsLoader)

	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	l.SetContext(ctx)

	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj))

	// Upstream caches the compiled function by its source; compiling each
	// time behaves the same.
	fn, err := l.LoadString(script)
	if err == nil {
		l.Push(fn)
		err = l.PCall(0, lua.MultRet, nil)
	}
	// Run-time errors reach users without Lua's stack trace.
	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) && apiErr.Type == lua.ApiErrorRun {
		apiErr.StackTrace = ""
		err = apiErr
	}
	return l, err
}

// executeHealthLua runs a health check on obj and reads its result, as
// VM.ExecuteHealthLua does. A nil result (the script returned nothing or nil)
// means no health from this check: Argo CD then falls back to its built-in
// checks, of which a custom resource has none (v3.5 returned an empty status
// instead).
func executeHealthLua(obj map[string]any, script string, useOpenLibs bool) (*HealthStatus, error) {
	l, err := runLua(obj, script, useOpenLibs)
	if err != nil {
		return nil, err
	}
	returnValue := l.Get(-1)
	switch returnValue.Type() {
	case lua.LTTable:
		jsonBytes, err := luajson.Encode(returnValue)
		if err != nil {
			return nil, err
		}
		healthStatus := &HealthStatus{}
		if err := json.Unmarshal(jsonBytes, healthStatus); err != nil {
			// Upstream means an empty table (which encodes as `[]`), but its
			// errors.As matches every *json.UnmarshalTypeError: a status or
			// message that is not a string gives an empty status too.
			var typeError *json.UnmarshalTypeError
			if errors.As(err, &typeError) {
				return &HealthStatus{}, nil
			}
			return nil, err
		}
		if !isValidHealthStatusCode(healthStatus.Status) {
			return &HealthStatus{
				Status:  HealthStatusUnknown,
				Message: invalidHealthStatus,
			}, nil
		}
		return healthStatus, nil
	case lua.LTNil:
		return nil, nil
	}
	return nil, fmt.Errorf(incorrectReturnType, "table", returnValue.Type().String())
}

func isValidHealthStatusCode(code HealthStatusCode) bool {
	switch code {
	case HealthStatusUnknown, HealthStatusProgressing, HealthStatusSuspended,
		HealthStatusHealthy, HealthStatusDegraded, HealthStatusMissing:
		return true
	}
	return false
}

// decodeValue turns a decoded JSON or YAML value into a Lua value, as upstream's
// decodeValue does: numbers of every Go type become Lua numbers (the API
// server's objects carry int64, a file read by sigs.k8s.io/yaml float64),
// except json.Number, which becomes a string; arrays become sequences; types
// it does not know become nil.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// openSafeOs is called where Lua's os library would be opened. Like upstream's
// OpenSafeOs it registers its functions under the table library's name, and
// since the table library is already loaded, gopher-lua's RegisterModule
// returns it unchanged: no global `os` is set. Scripts reach time and date
// through require("os") (safeOsLoader), with the standard libraries open too
// (reopening package empties package.loaded, so the preload wins), though the
// global os is then gopher-lua's whole one.
func openSafeOs(l *lua.LState) int {
	l.Push(l.RegisterModule(lua.TabLibName, safeOsFuncs))
	return 1
}

// safeOsLoader is what require("os") loads when the standard libraries are
// closed.
func safeOsLoader(l *lua.LState) int {
	l.Push(l.SetFuncs(l.NewTable(), safeOsFuncs))
	return 1
}

// The os functions a check may call: the clock, nothing that touches the
// machine.
var safeOsFuncs = map[string]lua.LGFunction{
	"time": osTime,
	"date": osDate,
}

// osTime: os.time() is now, os.time{year=, month=, day=[, hour=12, min=0,
// sec=0]} that local time, both in seconds since the epoch.
func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	fields := l.CheckTable(1)
	field := func(name string, missing int) int {
		if n, ok := fields.RawGetString(name).(lua.LNumber); ok {
			return int(n)
		}
		return missing
	}
	t := time.Date(field("year", -1), time.Month(field("month", -1)), field("day", -1),
		field("hour", 12), field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

// osDate: os.date([format[, seconds]]) with strftime's common conversions; a
// format starting with "!" is in UTC, "*t" gives the fields as a table.
func osDate(l *lua.LState) int {
	t := time.Now()
	format := "%c"
	if l.GetTop() >= 1 {
		format = l.CheckString(1)
		if strings.HasPrefix(format, "!") {
			t = t.UTC()
			format = strings.TrimLeft(format, "!")
		}
		if l.GetTop() >= 2 {
			t = time.Unix(l.CheckInt64(2), 0)
		}
		if strings.HasPrefix(format, "*t") {
			fields := l.NewTable()
			for name, value := range map[string]int{
				"year": t.Year(), "month": int(t.Month()), "day": t.Day(),
				"hour": t.Hour(), "min": t.Minute(), "sec": t.Second(),
				"wday": int(t.Weekday()) + 1, "yday": 0,
			} {
				fields.RawSetString(name, lua.LNumber(value))
			}
			fields.RawSetString("isdst", lua.LFalse)
			l.Push(fields)
			return 1
		}
	}
	l.Push(lua.LString(strftime(t, format)))
	return 1
}

// strftimeLayouts maps strftime conversions to Go layouts.
var strftimeLayouts = map[byte]string{
	'a': "Mon", 'A': "Monday", 'b': "Jan", 'B': "January", 'c': "02 Jan 06 15:04 MST",
	'd': "02", 'F': "2006-01-02", 'H': "15", 'I': "03", 'm': "01", 'M': "04",
	'p': "PM", 'S': "05", 'x': "01/02/06", 'X': "15:04:05", 'y': "06", 'Y': "2006",
	'z': "-0700", 'Z': "MST",
}

func strftime(t time.Time, format string) string {
	var out strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 == len(format) {
			out.WriteByte(c)
			continue
		}
		i++
		switch conversion := format[i]; {
		case conversion == '%':
			out.WriteByte('%')
		case conversion == 'w':
			out.WriteString(strconv.Itoa(int(t.Weekday())))
		case strftimeLayouts[conversion] != "":
			out.WriteString(t.Format(strftimeLayouts[conversion]))
		default:
			out.WriteByte('%')
			out.WriteByte(conversion)
		}
	}
	return out.String()
}

// The finalizer behind which Argo CD holds hooks (gitops-engine pkg/sync/hook).
const hookFinalizer = "argocd.argoproj.io/hook-finalizer"

// resourceHealth is the health Argo CD shows for obj when script is its check
// (gitops-engine pkg/health GetResourceHealth with a health override): a
// script error shows as Unknown with the error; a terminating object is
// Progressing, "Pending deletion" (with its finalizers), unless the check set
// deletionMessage.
func resourceHealth(obj map[string]any, script string, useOpenLibs bool) (*HealthStatus, error) {
	health, err := executeHealthLua(obj, script, useOpenLibs)
	if err != nil {
		return &HealthStatus{Status: HealthStatusUnknown, Message: err.Error()}, err
	}
	if deleting := pendingDeletionHealth(obj, health); deleting != nil {
		return deleting, nil
	}
	return health, nil
}

// pendingDeletionHealth mirrors gitops-engine pkg/health/health.go.
func pendingDeletionHealth(obj map[string]any, health *HealthStatus) *HealthStatus {
	metadata, _ := obj["metadata"].(map[string]any)
	stamp, _ := metadata["deletionTimestamp"].(string)
	// Unstructured.GetDeletionTimestamp: absent or unparsable is not deleting.
	if when, err := time.Parse(time.RFC3339, stamp); err != nil || when.IsZero() {
		return nil
	}
	var finalizers []string
	if list, ok := metadata["finalizers"].([]any); ok {
		for _, f := range list {
			if s, ok := f.(string); ok {
				finalizers = append(finalizers, s)
			}
		}
	}
	for _, f := range finalizers {
		if f == hookFinalizer {
			return nil
		}
	}
	if health != nil && health.DeletionMessage != "" {
		return &HealthStatus{Status: health.Status, Message: health.DeletionMessage}
	}
	message := "Pending deletion"
	if len(finalizers) > 0 {
		message = "Pending deletion; blocked by finalizers: " + strings.Join(finalizers, ", ")
	}
	return &HealthStatus{Status: HealthStatusProgressing, Message: message}
}
