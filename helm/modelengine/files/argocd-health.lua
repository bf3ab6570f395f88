-- Argo CD health check for modelengine.io/ModelEngine (argocd-cm key
-- resource.customizations.health.modelengine.io_ModelEngine). Reads the operator's
-- kstatus conditions (Ready, Reconciling, Stalled) and, with spec.serving, the
-- RolloutStalled and VersionMismatch conditions. Lua 5.1, as Argo CD's gopher-lua runs it.
local hs = {}

local function condition(conditions, ctype)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == ctype then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function text(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  if c ~= nil and c.reason ~= nil and c.reason ~= "" then
    return c.reason
  end
  return fallback
end

local generation = obj.metadata.generation
local status = obj.status

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "being deleted: waiting for the operator to release its finalizer"
  return hs
end

if status == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to report a status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local conditions = status.conditions
local stalled = condition(conditions, "Stalled")
local ready = condition(conditions, "Ready")
local reconciling = condition(conditions, "Reconciling")
local rollout = condition(conditions, "RolloutStalled")
local mismatch = condition(conditions, "VersionMismatch")

if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = text(stalled, "stalled")
  return hs
end

-- A stalled or version-blocked rollout keeps the previous pods serving, but it will not
-- finish without a change: Degraded once the builds are done.
local blocked = nil
if is_true(rollout) then
  blocked = rollout
elseif is_true(mismatch) then
  blocked = mismatch
end

-- Serving groups still rolling out (new pods not yet available) and GPU kinds left
-- without an engine, from status.serving.
local rolling = {}
local no_engine = {}
if status.serving ~= nil then
  for _, g in ipairs(status.serving) do
    local name = g.product or g.group
    if g.phase == "Progressing" then
      table.insert(rolling, name .. " " .. tostring(g.readyReplicas or 0) .. "/" .. tostring(g.replicas or 0))
    elseif g.phase == "NoEngine" then
      table.insert(no_engine, name)
    end
  end
end

if is_true(ready) and blocked == nil then
  if #rolling > 0 then
    hs.status = "Progressing"
    hs.message = "rolling out: " .. table.concat(rolling, ", ")
    return hs
  end
  hs.status = "Healthy"
  hs.message = text(ready, "ready")
  if #no_engine > 0 then
    hs.message = hs.message .. "; no engine (no pods) for " .. table.concat(no_engine, ", ")
  end
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = text(reconciling, "reconciling")
  return hs
end

if blocked ~= nil then
  hs.status = "Degraded"
  hs.message = text(blocked, blocked.type)
  return hs
end

hs.status = "Progressing"
if status.message ~= nil and status.message ~= "" then
  hs.message = status.message
else
  hs.message = text(ready, "phase " .. tostring(status.phase))
end
return hs
