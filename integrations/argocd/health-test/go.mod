// Sluice's Argo CD health checks (../resource_customizations) run the way Argo
// CD v3 runs them: `go test ./...` checks every health_test.yaml, and the
// command sluice-argocd-health prints the health of live objects. The Lua
// interpreter and the JSON and YAML libraries are the versions Argo CD v3.6.1
// (the newest v3 release) requires in its go.mod.
module sluice.dev/integrations/argocd/health-test

go 1.25

require (
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
	sigs.k8s.io/yaml v1.6.0
)

require go.yaml.in/yaml/v2 v2.4.4 // indirect
