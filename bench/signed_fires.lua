-- wrk script: replay pre-signed hmac_sha256 fires, one unique delivery per request.
local requests = {}
local index = 0

function init(args)
  for line in io.lines(args[1]) do
    local path, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["X-Paperclip-Timestamp"] = ts,
      ["X-Paperclip-Signature"] = sig,
    }, body)
  end
end

function request()
  index = index + 1
  return requests[((index - 1) % #requests) + 1]
end
