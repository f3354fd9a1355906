# Argo CD end to end on the local cluster (e2e/argocd): a real Argo CD, v3.6.1's
# application controller and repo server built from the Go module proxy
# (e2e/argocd-bins, e2e/argocd/build.sh), syncs an InferenceService from a Git
# repository with Sluice's health checks installed. Included by the root Makefile.

.PHONY: argocd-e2e-deps test-argocd-e2e
# About 30 s once built (the first build takes ~7 min).
TEST_TARGETS += test-argocd-e2e

## argocd-e2e-deps: redis-server and git (apt-get, when missing), and Argo CD v3.6.1's application controller and repo server built once into $SLUICE_CACHE/argocd-v3.6.1-<hash> (Go 1.27 from the Go module proxy; ~7 min on 2 cores the first time)
argocd-e2e-deps:
	@$(REPO_ROOT)/e2e/argocd/deps.sh

## test-argocd-e2e: Argo CD syncs an InferenceService from Git (automated sync, self-heal, server-side apply): Synced and Healthy, Synced over refreshes after reconciles, a new version Progressing then promoted, a rollback command Degraded yet Synced, ended by a Git revert (prints the sync/health sequence)
test-argocd-e2e: build cluster-deps argocd-e2e-deps
	@$(REPO_ROOT)/e2e/argocd/e2e.sh
