-- One window of dynip's http bench (benches/http.rs), for wrk (Debian's package wrk).
--
-- wrk -t T -c C -d S -s http_wrk.lua URL -- FIRST STEP HOSTS PATH AUTH
--   FIRST  the first request counter (so that each window goes on where the last stopped)
--   STEP   the number of wrk threads: thread i takes counters FIRST+i, FIRST+i+STEP, ...
--   HOSTS  how many host names the counters rotate over (host-0 ... host-(HOSTS-1))
--   PATH   /nic/update or /healthz: the same query and headers either way
--   AUTH   the Basic credentials, base64
--
-- Request N asks PATH?hostname=host-(N mod HOSTS)&myip=A, with A the (N mod 2^17)-th
-- address of 198.18.0.0/15 (RFC 2544, for benchmarks): a new address for its host each
-- time. At the end it prints one line for the bench to read:
--   dynip-bench answered=N duration_us=D connect=E read=E write=E status=E timeout=E
--   p50_us=L p99_us=L next=FIRST'
-- where next is the first counter no thread has used.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  step = tonumber(args[2])
  counter = tonumber(args[1]) + id
  hosts = tonumber(args[3])
  path = args[4]
  wrk.headers["Authorization"] = "Basic " .. args[5]
  wrk.headers["User-Agent"] = "dynip-bench"
end

function request()
  local host = counter % hosts
  local a = counter % 131072
  counter = counter + step
  return wrk.format(nil, string.format("%s?hostname=host-%d&myip=198.%d.%d.%d", path, host,
    18 + math.floor(a / 65536), math.floor(a / 256) % 256, a % 256))
end

function done(summary, latency, requests)
  local next = 0
  for _, thread in ipairs(threads) do
    local used = thread:get("counter")
    if used > next then next = used end
  end
  local errors = summary.errors
  io.write(string.format(
    "dynip-bench answered=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d next=%d\n",
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(99), next))
end
