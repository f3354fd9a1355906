# Argo CD health checks for InferenceService and BatchInference (integrations/argocd):
# Lua in Argo CD's resource_customizations layout, tested with the Lua interpreter and
# VM setup of Argo CD v3 (gopher-lua, re-implemented small in health-test/), and the
# argocd-cm patch that installs them. Go builds use Go's own caches; the command
# goes to $SLUICE_CACHE/argocd-health-<hash>.
# Included by the root Makefile.

ARGOCD_HEALTH_SH := $(REPO_ROOT)/integrations/argocd/health.sh
TEST_TARGETS += test-argocd-health
.PHONY: test-argocd-health argocd-health-bin argocd-cm

## test-argocd-health: the Argo CD health checks of InferenceService and BatchInference on every case of their health_test.yaml (go test, Argo CD's Lua VM, with Lua's libraries open and closed); fails when integrations/argocd/argocd-cm-patch.yaml is stale
test-argocd-health:
	@$(ARGOCD_HEALTH_SH) test

## argocd-health-bin: build sluice-argocd-health (`kubectl get isvc x -o yaml | DIR/sluice-argocd-health -` prints Argo CD's health) into $SLUICE_CACHE/argocd-health-<hash> when missing; prints that directory
argocd-health-bin:
	@$(ARGOCD_HEALTH_SH) bin

## argocd-cm: render integrations/argocd/argocd-cm-patch.yaml (each health.lua under its resource.customizations.health key of argocd-cm)
argocd-cm:
	@$(ARGOCD_HEALTH_SH) cm
