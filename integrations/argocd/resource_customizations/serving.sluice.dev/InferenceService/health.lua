-- Health of a Sluice InferenceService (serving.sluice.dev/v1alpha1).
--
-- sluice-operator writes the status in operator/src/status.rs (Sluice's
-- repository): a Ready condition, True only once the current revision is fully
-- rolled out and serves on enough ready pods; finer conditions (Reconciled,
-- ModelFetched, Available, ProfileFetched, ModelOptimized, NodesMatched) whose
-- False keeps Ready False with the same reason and message; status.phase
-- (Pending, Progressing, Ready or Failed); and status.rollout.phase
-- (Progressing, Paused, Promoted, RolledBack or Aborted, operator/src/crd/rollout.rs);
-- status.rollback while a rollback command holds an older revision.
-- Ready's message says why in words, so it is the message shown here.
--
-- Only the base library is used: Argo CD runs argocd-cm health checks without
-- Lua's standard libraries unless resource.customizations.useOpenLibs is set.

local hs = {}
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for sluice-operator to report status"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = (obj.metadata or {}).generation
local observed = status.observedGeneration
if observed == nil or observed ~= generation then
  hs.status = "Progressing"
  hs.message = "Status is stale (observedGeneration " .. tostring(observed or "none") ..
    ", generation " .. tostring(generation or "none") .. "): waiting for sluice-operator"
  return hs
end

local conditions = {}
for _, c in ipairs(status.conditions or {}) do
  if c.type ~= nil then
    conditions[c.type] = c
  end
end
local ready = conditions["Ready"] or {}

-- Reasons of a False Ready that waiting does not cure.
local failedReasons = {
  InvalidSpec = true, ApplyFailed = true,                  -- Reconciled
  FetchFailed = true, DigestMismatch = true,               -- ModelFetched
  ProfileFetchFailed = true, ProfileDigestMismatch = true, -- ProfileFetched
  OptimizeFailed = true, AgreementBelowMinimum = true,     -- ModelOptimized
  NoMatchingNodes = true,                                  -- NodesMatched
  CrashLooping = true,                                     -- Available
  RolledBack = true, RolloutAborted = true,                -- the rollout ended unpromoted
}
-- Conditions whose False fails the service, whatever the reason.
local failingTypes = { "Reconciled", "ModelFetched", "ProfileFetched", "ModelOptimized", "NodesMatched" }

local degraded = status.phase == "Failed" or
  (ready.status == "False" and ready.reason ~= nil and failedReasons[ready.reason] == true)
local message = nil
if ready.status ~= "True" then
  message = ready.message
end
for _, t in ipairs(failingTypes) do
  local c = conditions[t]
  if c ~= nil and c.status == "False" then
    degraded = true
    message = message or c.message
  end
end
message = message or status.message or ready.message

if degraded then
  hs.status = "Degraded"
  hs.message = message or "status.phase is Failed"
  return hs
end

-- A rollback command holds an older revision in place of the spec's until the
-- spec changes: serving, but not what Git asks for (revert the commit, or push a
-- fix).
if status.rollback ~= nil then
  hs.status = "Degraded"
  hs.message = "Rolled back by command to revision " .. tostring(status.rollback.revision) ..
    " (" .. tostring((status.rollback.model or {}).storageUri) .. "); the spec's revision " ..
    tostring(status.rollback.specRevision) .. " waits for a change in Git: revert the commit or push a fix"
  return hs
end

-- Held by the pause annotation until resumed, promoted or aborted.
if status.rollout ~= nil and status.rollout.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = message or "The rollout is paused"
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end

-- A rollout runs, or pods are starting or being scheduled.
hs.status = "Progressing"
hs.message = message or "Waiting for the Ready condition"
return hs
