-- Shared by the wrk scenarios of benchmarks/wrk_load.py. Settings come from the environment:
-- WRK_PREFIX (the SCIM base path, e.g. /scim/v2), WRK_TOKEN, WRK_USERS (a file of
-- "id userName" lines, the users seeded before the run) and WRK_TAG (makes userNames unique).
local M = {}

M.prefix = os.getenv("WRK_PREFIX") or "/scim/v2"
M.tag = os.getenv("WRK_TAG") or "wrk"
M.headers = {
  ["Authorization"] = "Bearer " .. (os.getenv("WRK_TOKEN") or ""),
  ["Accept"] = "application/scim+json",
  ["Content-Type"] = "application/scim+json",
}

function M.users()
  local ids, names = {}, {}
  for line in io.lines(os.getenv("WRK_USERS")) do
    local id, name = line:match("^(%S+) (%S+)$")
    ids[#ids + 1] = id
    names[#names + 1] = name
  end
  return ids, names
end

-- wrk runs setup() once per thread in the main state; each thread gets its own number.
local threads = 0
function M.setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

-- One JSON line per scenario on stdout, read by wrk_load.py.
function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "status_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

return M
