-- Argo CD custom health check for fogcompute.io/FogDeployment.
-- Install as argocd-cm key `resource.customizations.health.fogcompute.io_FogDeployment`
-- (see README.md next to this file).
--
-- Argo CD runs this with the live object in the global `obj` and expects a table
-- {status = Healthy|Progressing|Degraded|Suspended|Missing|Unknown, message = string}.
-- Only base Lua 5.1 is used (Argo CD's interpreter does not open os/io by default).
--
-- Mapping (kstatus-style conditions Ready / Reconciling / Stalled written by fog-controller):
--   no status, or status.observedGeneration < metadata.generation  -> Progressing
--   Stalled=True                                                    -> Degraded (its message)
--   phase Failed                                                    -> Degraded
--   Progressing reason DeploymentPaused (spec.paused)               -> Suspended
--   Ready=True for the current generation, phase Stopped            -> Healthy (stopped)
--   Ready=True for the current generation                           -> Healthy
--   anything else                                                   -> Progressing (Reconciling's message)

local hs = {}

local function find_condition(status, condition_type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, condition in ipairs(status.conditions) do
    if condition.type == condition_type then
      return condition
    end
  end
  return nil
end

-- A condition describes the current spec unless it says it was computed for an older
-- generation. (metav1.Condition.observedGeneration is optional.)
local function is_current(condition, generation)
  return generation == nil or condition.observedGeneration == nil
    or condition.observedGeneration >= generation
end

-- The first argument that is a non-empty string (arguments may be nil, so no ipairs).
local function first_message(...)
  for i = 1, select("#", ...) do
    local candidate = select(i, ...)
    if type(candidate) == "string" and candidate ~= "" then
      return candidate
    end
  end
  return ""
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local status = obj.status

if status == nil or status.observedGeneration == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for fog-controller to observe the FogDeployment"
  return hs
end

if generation ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for fog-controller to observe generation " .. tostring(generation)
    .. " (observed " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local stalled = find_condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = first_message(stalled.message, stalled.reason, "FogDeployment is stalled")
  return hs
end

local ready = find_condition(status, "Ready")

if status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = first_message(ready and ready.message, "FogDeployment failed")
  return hs
end

-- Paused (spec.paused) is what Argo CD calls a paused Deployment: Suspended.
local progressing = find_condition(status, "Progressing")
if progressing ~= nil and progressing.reason == "DeploymentPaused" then
  hs.status = "Suspended"
  hs.message = first_message(progressing.message, "FogDeployment is paused")
  return hs
end

if ready ~= nil and ready.status == "True" and is_current(ready, generation) then
  hs.status = "Healthy"
  if status.phase == "Stopped" then
    hs.message = first_message(ready.message, "FogDeployment is stopped (0 replicas)")
  else
    hs.message = first_message(ready.message, "All replicas are ready")
  end
  return hs
end

local reconciling = find_condition(status, "Reconciling")
hs.status = "Progressing"
hs.message = first_message(
  reconciling and reconciling.status == "True" and reconciling.message or nil,
  ready and ready.message,
  "Waiting for FogDeployment to become ready"
)
return hs
