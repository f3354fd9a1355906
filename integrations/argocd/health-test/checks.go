package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// check is one health check: its script and whether Argo CD runs it with Lua's
// standard libraries open.
type check struct {
	script      string
	useOpenLibs bool
	// where names the script in messages.
	where string
}

// checks finds the health check of a group and kind.
type checks interface {
	find(group, kind string) (*check, error)
}

// configMapKey is Argo CD's key for a group and kind (util/lua GetConfigMapKey).
func configMapKey(group, kind string) string {
	if group == "" {
		return kind
	}
	return group + "/" + kind
}

// groupKind is obj's API group and kind.
func groupKind(obj map[string]any) (string, string) {
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	group := ""
	if i := strings.LastIndex(apiVersion, "/"); i >= 0 {
		group = apiVersion[:i]
	}
	return group, kind
}

// treeChecks reads checks laid out as Argo CD's resource_customizations
// directory: <dir>/<group>/<Kind>/health.lua.
type treeChecks struct {
	dir         string
	useOpenLibs bool
}

func (t treeChecks) find(group, kind string) (*check, error) {
	path := filepath.Join(t.dir, filepath.FromSlash(configMapKey(group, kind)), "health.lua")
	script, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no health check for %s in %s", configMapKey(group, kind), t.dir)
	}
	if err != nil {
		return nil, err
	}
	return &check{script: string(script), useOpenLibs: t.useOpenLibs, where: path}, nil
}

// configMapChecks are the resource.customizations.health.<group>_<kind> and
// resource.customizations.useOpenLibs.<group>_<kind> keys of an argocd-cm
// ConfigMap, read as Argo CD reads them (util/settings/settings.go
// appendResourceOverridesFromSplitKeys and convertToOverrideKey). The older
// resource.customizations key, one YAML document for every kind, and its
// wildcards are not read.
type configMapChecks struct {
	path      string
	overrides map[string]*check
}

// readConfigMap reads the argocd-cm ConfigMap (or a patch of it) in file.
func readConfigMap(file string) (*configMapChecks, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	checks := &configMapChecks{path: file, overrides: map[string]*check{}}
	for key, value := range cm.Data {
		parts := strings.SplitN(key, ".", 4)
		if len(parts) < 4 || parts[0]+"."+parts[1] != "resource.customizations" {
			continue
		}
		groupKind := strings.Split(parts[3], "_")
		var overrideKey string
		switch {
		case len(groupKind) == 2:
			overrideKey = groupKind[0] + "/" + groupKind[1]
		case len(groupKind) == 1 && parts[3] != "":
			overrideKey = parts[3]
		default:
			return nil, fmt.Errorf("%s: key %s: the group and kind must be <group>_<kind> or <kind>", file, key)
		}
		override := checks.overrides[overrideKey]
		if override == nil {
			override = &check{where: file + " data." + key}
			checks.overrides[overrideKey] = override
		}
		switch parts[2] {
		case "health":
			override.script = value
			override.where = file + " data." + key
		case "useOpenLibs":
			if override.useOpenLibs, err = strconv.ParseBool(value); err != nil {
				return nil, fmt.Errorf("%s: key %s: %w", file, key, err)
			}
		}
	}
	return checks, nil
}

func (c *configMapChecks) find(group, kind string) (*check, error) {
	override := c.overrides[configMapKey(group, kind)]
	if override == nil || override.script == "" {
		return nil, fmt.Errorf("no health check for %s in %s", configMapKey(group, kind), c.path)
	}
	return override, nil
}
