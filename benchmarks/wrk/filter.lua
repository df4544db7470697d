-- GET /Users?filter=userName eq "<a seeded user's name>".
package.path = os.getenv("WRK_SCRIPTS") .. "/?.lua;" .. package.path
local c = require("common")
setup, done = c.setup, c.done
local names, counter = nil, 0

function init(args)
  local _
  _, names = c.users()
  counter = (thread_number or 0) * 7919
end

function request()
  counter = counter + 1
  local path = c.prefix .. "/Users?filter=userName%20eq%20%22" .. names[counter % #names + 1] .. "%22"
  return wrk.format("GET", path, c.headers)
end
