-- wrk load script: a random id and a random body per request, percentiles printed as JSON.
-- usage: wrk -s load.lua URL -- METHOD PATH IDS_FILE|- BODIES_FILE|- CONTENT_TYPE
-- With an ids file, PATH is a prefix and a random id is appended to it.

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("number", threads)
end

local function lines(path)
   if path == nil or path == "-" then
      return nil
   end
   local out = {}
   for line in io.lines(path) do
      if #line > 0 then
         out[#out + 1] = line
      end
   end
   return out
end

function init(args)
   method = args[1]
   path = args[2]
   ids = lines(args[3])
   bodies = lines(args[4])
   headers = {}
   if bodies ~= nil then
      headers["Content-Type"] = args[5] or "application/json"
   end
   -- Each thread draws its own sequence, so two threads never replay the same ids.
   math.randomseed(os.time() * 100 + (number or 0))
end

function request()
   local target = path
   if ids ~= nil then
      target = path .. ids[math.random(#ids)]
   end
   local body = nil
   if bodies ~= nil then
      body = bodies[math.random(#bodies)]
   end
   return wrk.format(method, target, headers, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
      '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},' ..
      '"latency_us":{"p50":%.0f,"p90":%.0f,"p99":%.0f,"p999":%.0f,"mean":%.1f,"max":%.0f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.mean, latency.max))
end
