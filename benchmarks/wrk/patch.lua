-- PATCH /Users/{id}: a PatchOp replace of displayName, over the seeded users.
package.path = os.getenv("WRK_SCRIPTS") .. "/?.lua;" .. package.path
local c = require("common")
setup, done = c.setup, c.done
local ids, counter = nil, 0

function init(args)
  ids = c.users()
  counter = (thread_number or 0) * 7919
end

function request()
  counter = counter + 1
  local body = '{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":'
    .. '[{"op":"replace","path":"displayName","value":"Patched ' .. counter .. '"}]}'
  return wrk.format("PATCH", c.prefix .. "/Users/" .. ids[counter % #ids + 1], c.headers, body)
end
