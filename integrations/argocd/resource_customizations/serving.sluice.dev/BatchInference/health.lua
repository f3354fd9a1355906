-- Health of a Sluice BatchInference (serving.sluice.dev/v1alpha1).
--
-- sluice-operator writes the status in operator/src/batch/status.rs (Sluice's
-- repository): status.phase (Pending, Running, Succeeded, Failed or Suspended)
-- is the running run's, else Suspended while spec.suspend holds the runs,
-- Failed when the spec cannot run (condition Reconciled False), else the
-- latest run's; status.message says why in words.
--
-- Without spec.schedule the resource is one run, judged like a Job: it
-- progresses until the run ends. With spec.schedule it is judged like Argo CD's
-- batch/CronJob check: Healthy between runs and while one runs, Degraded when
-- the latest run that ended failed, so a nightly run does not hold an app in
-- Progressing for hours.
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

local reconciled = nil
for _, c in ipairs(status.conditions or {}) do
  if c.type == "Reconciled" then
    reconciled = c
  end
end
local phase = status.phase
local message = status.message or ""
local scheduled = obj.spec ~= nil and obj.spec.schedule ~= nil

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
  return hs
end
-- The spec cannot run (an InferenceService it names is missing, say) while an
-- earlier run still goes on.
if reconciled ~= nil and reconciled.status == "False" then
  hs.status = "Degraded"
  hs.message = reconciled.message or message
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
elseif phase == "Succeeded" or (scheduled and (phase == "Pending" or phase == "Running")) then
  hs.status = "Healthy"
else
  hs.status = "Progressing"
end
hs.message = message
return hs
