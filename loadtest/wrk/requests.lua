-- wrk script: replays the requests listed in a file, one per line, round robin from a random start.
-- Line format (tab separated): METHOD <TAB> PATH <TAB> HEADERS <TAB> BODY
--   HEADERS is "Name: value" pairs joined by "|" (may be empty); BODY may be empty.
-- Usage: wrk -s requests.lua URL -- FILE [CODES]
-- done() prints one line "status <code> <count>" per status seen, which `peak bench` reads.
-- With CODES, the "code" query parameter of every redirect's Location is appended to that file, one a line
-- (the authorization codes of `peak bench`'s code_exchange, loadtest/oidc_paths.py).

local requests = {}
local counter = 0
statuses = {}  -- global: done() reads it from every thread
local threads = {}
local codes = nil

local function split(line, sep)
  local out = {}
  for part in (line .. sep):gmatch("(.-)" .. sep) do table.insert(out, part) end
  return out
end

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local fields = split(line, "\t")
    local headers = {}
    if fields[3] and fields[3] ~= "" then
      for _, pair in ipairs(split(fields[3], "|")) do
        local name, value = pair:match("^([^:]+):%s*(.*)$")
        headers[name] = value
      end
    end
    local body = fields[4]
    if body == "" then body = nil end
    table.insert(requests, wrk.format(fields[1], fields[2], headers, body))
  end
  f:close()
  if args[2] then
    codes = assert(io.open(args[2], "a"))
    codes:setvbuf("line")
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  counter = math.random(#requests)
  statuses = {}
end

request = function()
  counter = counter % #requests + 1
  return requests[counter]
end

response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if codes then
    local location = headers["location"] or headers["Location"]
    local code = location and location:match("[?&]code=([^&#]+)")
    if code then codes:write(code, "\n") end
  end
end

done = function(summary, latency, requests_)
  local total = {}
  for _, thread in ipairs(threads) do
    local seen = thread:get("statuses") or {}
    for code, n in pairs(seen) do total[code] = (total[code] or 0) + n end
  end
  for code, n in pairs(total) do io.write(string.format("status %d %d\n", code, n)) end
end
