-- GET /Users?startIndex=N&count=100, N walking over the directory (WRK_POPULATION users).
package.path = os.getenv("WRK_SCRIPTS") .. "/?.lua;" .. package.path
local c = require("common")
setup, done = c.setup, c.done
local positions = tonumber(os.getenv("WRK_POPULATION") or "1000") - 100 + 1
local counter = 0

function init(args)
  counter = (thread_number or 0) * 3
end

function request()
  counter = counter + 1
  local start = 1 + (counter * 100) % positions
  return wrk.format("GET", c.prefix .. "/Users?startIndex=" .. start .. "&count=100", c.headers)
end
