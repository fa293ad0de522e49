-- wrk script for bench/run: one scenario per run.
--
--   wrk ... -s bench/wrk.lua http://127.0.0.1:PORT -- SPEC_FILE TOKENS_FILE THREADS
--
-- SPEC_FILE (written by `bench.py spec`): line 1 the method, line 2 the path, then zero or more
-- request bodies, one per line. TOKENS_FILE: one bearer token per line, one user each.
-- Requests are prepared in init(): consecutive requests of a thread go to different users, and
-- each thread has users of its own. Every non-2xx response and every 2xx response whose
-- body has an `"errors":` member (GraphQL errors) counts as an error; done() prints one
-- machine-readable BENCH_RESULT line. Socket errors and timeouts are added by bench.py.

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local function read_lines(path)
   local lines = {}
   local f = assert(io.open(path, "r"), "cannot open " .. path)
   for line in f:lines() do
      if line ~= "" then
         table.insert(lines, line)
      end
   end
   f:close()
   return lines
end

local requests_ = {}
local next_index = 1

errors = 0
status_errors = 0
-- The first bad response of the thread, for the log: status and the start of the body.
first_bad_status = 0
first_bad_body = ""

function init(args)
   local spec = read_lines(args[1])
   local tokens = read_lines(args[2])
   local method, path = spec[1], spec[2]
   local bodies = {}
   for i = 3, #spec do
      table.insert(bodies, spec[i])
   end
   -- `id` is set by setup() before init() runs in the thread. Each thread sends as its own
   -- users, token i going to thread i mod N, so that two threads never write the same user's
   -- rows at the same time. (Threads that started at different offsets into the same users
   -- drifted into step within seconds and then raced on the same users' rows.)
   local nthreads = math.max(1, tonumber(args[3] or "1"))
   local mine = {}
   for i = 1, #tokens do
      if (i - 1) % nthreads == (id or 0) % nthreads then
         table.insert(mine, tokens[i])
      end
   end
   if #mine == 0 then
      mine = tokens
   end
   -- Every (token, body) pair once: entry j uses token j mod T and body (j div T) mod B.
   local count = #mine * math.max(1, #bodies)
   for j = 0, count - 1 do
      local headers = {
         ["Authorization"] = "Bearer " .. mine[(j % #mine) + 1],
      }
      local body = nil
      if #bodies > 0 then
         body = bodies[(math.floor(j / #mine) % #bodies) + 1]
         headers["Content-Type"] = "application/json"
      end
      requests_[j + 1] = wrk.format(method, path, headers, body)
   end
end

function request()
   local r = requests_[next_index]
   next_index = next_index + 1
   if next_index > #requests_ then
      next_index = 1
   end
   return r
end

local function remember(status, body)
   if first_bad_status == 0 then
      first_bad_status = status
      first_bad_body = string.sub(body or "", 1, 200)
   end
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      errors = errors + 1
      status_errors = status_errors + 1
      remember(status, body)
   elseif body ~= nil and string.find(body, '"errors":', 1, true) then
      -- A GraphQL response with errors; async-graphql leaves the member out when there are none.
      errors = errors + 1
      remember(status, body)
   end
end

function done(summary, latency, requests)
   local bad = 0
   local non2xx = 0
   local bad_status = 0
   local bad_body = ""
   for _, thread in ipairs(threads) do
      bad = bad + (thread:get("errors") or 0)
      non2xx = non2xx + (thread:get("status_errors") or 0)
      if bad_status == 0 and (thread:get("first_bad_status") or 0) ~= 0 then
         bad_status = thread:get("first_bad_status")
         bad_body = thread:get("first_bad_body") or ""
      end
   end
   -- JSON string escaping of the body excerpt.
   bad_body = string.gsub(bad_body, '[%c"\\]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end)
   local e = summary.errors
   local socket = e.connect + e.read + e.write + e.timeout
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"errors":%d,"status_errors":%d,' ..
      '"socket_errors":%d,"wrk_status_errors":%d,"first_bad_status":%d,"first_bad_body":"%s"}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean, bad, non2xx, socket, e.status, bad_status, bad_body))
end
