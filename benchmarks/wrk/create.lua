-- POST /Users with a userName no other request uses.
package.path = os.getenv("WRK_SCRIPTS") .. "/?.lua;" .. package.path
local c = require("common")
setup, done = c.setup, c.done
local counter = 0

function request()
  counter = counter + 1
  local name = string.format("%s-%d-%d", c.tag, thread_number or 0, counter)
  local body = '{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"' .. name
    .. '","name":{"givenName":"Bench","familyName":"' .. name .. '"},"displayName":"' .. name
    .. '","emails":[{"value":"' .. name .. '@example.com","type":"work","primary":true}],'
    .. '"active":true}'
  return wrk.format("POST", c.prefix .. "/Users", c.headers, body)
end
