-- GET /Users/{id} over the seeded users.
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
  return wrk.format("GET", c.prefix .. "/Users/" .. ids[counter % #ids + 1], c.headers)
end
