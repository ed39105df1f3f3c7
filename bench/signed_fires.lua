-- wrk script: replay pre-signed requests (one line each: path, then header=value fields, then the
-- body, tab-separated), one unique delivery per request; prints the count of each HTTP status.
local requests = {}
local index = 0
local threads = {}
counts = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do
    local fields = {}
    for field in (line .. "\t"):gmatch("([^\t]*)\t") do
      fields[#fields + 1] = field
    end
    local headers = { ["Content-Type"] = "application/json" }
    for i = 2, #fields - 1 do
      local name, value = fields[i]:match("^([^=]+)=(.*)$")
      headers[name] = value
    end
    requests[#requests + 1] = wrk.format("POST", fields[1], headers, fields[#fields])
  end
end

function request()
  index = index + 1
  return requests[((index - 1) % #requests) + 1]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("status %d %d\n", status, n))
  end
end
