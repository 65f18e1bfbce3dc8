-- One wrk script for every scenario of bench/run.py.
--
-- Arguments (after `--` on the wrk command line):
--   mode      get | create | update | delete | login | register | json
--   path      request path (for update: the prefix, the contact id is appended)
--   token     bearer token, or "-" for none
--   extra     get/update: a file of "id index" lines to rotate over ("-" for none; the
--             token "{id}" in the path is replaced by the next id);
--             delete: such a file, each id taken once, in order (a missing id once they
--             run out, so that a run longer than the file shows as 404s);
--             create, register: a nonce that keeps emails (and usernames) unique across runs;
--             login: the urlencoded form body;
--             json: the JSON body sent with every request
--
-- Every response's status is counted (a fast 500 is not a result), and done() prints one
-- line starting with "BENCH " holding JSON that bench/run.py parses.

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

local mode, path, headers, ids, nonce, form, body
local counter = 0
statuses = {}

local function read_ids(file)
  local out = {}
  for line in io.lines(file) do
    local id, index = line:match("^(%S+)%s+(%d+)$")
    if id then
      table.insert(out, { id = id, index = index })
    end
  end
  return out
end

function init(args)
  mode = args[1]
  path = args[2]
  headers = {}
  if args[3] and args[3] ~= "-" then
    headers["Authorization"] = "Bearer " .. args[3]
  end
  local extra = args[4] or "-"
  if (mode == "get" or mode == "update" or mode == "delete") and extra ~= "-" then
    ids = read_ids(extra)
  elseif mode == "create" or mode == "register" then
    -- The warm-up and the measurement share the arguments: a random part keeps emails unique.
    math.randomseed(os.time() * 1000 + (tid or 1))
    nonce = extra .. "-" .. math.random(1, 1000000000)
  elseif mode == "login" then
    form = extra
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  elseif mode == "json" then
    body = extra
  end
  if mode == "create" or mode == "update" or mode == "register" or mode == "json" then
    headers["Content-Type"] = "application/json"
  end
  -- Threads start at different points of the id list so they do not march in step.
  counter = (tid or 1) * 7919
  if mode == "delete" then
    counter = 0
  end
end

local function next_contact()
  counter = counter + 1
  return ids[(counter % #ids) + 1]
end

local function contact_body(email)
  return '{"first_name":"Bench","last_name":"Updated","email":"' .. email
    .. '","phone_number":"+380501234567","birthday":"1990-05-17","additional_data":"written by wrk"}'
end

function request()
  if mode == "get" then
    if ids then
      return wrk.format("GET", path:gsub("{id}", next_contact().id), headers)
    end
    return wrk.format("GET", path, headers)
  elseif mode == "create" then
    counter = counter + 1
    local email = "new-" .. nonce .. "-" .. tid .. "-" .. counter .. "@example.com"
    return wrk.format("POST", path, headers, contact_body(email))
  elseif mode == "update" then
    local contact = next_contact()
    -- Keep the contact's own email: a PUT replaces the whole resource.
    local email = "c" .. contact.index .. "@example.com"
    return wrk.format("PUT", path .. contact.id, headers, contact_body(email))
  elseif mode == "delete" then
    counter = counter + 1
    local contact = ids[counter] or { id = "00000000-0000-0000-0000-000000000000" }
    return wrk.format("DELETE", path .. contact.id, headers)
  elseif mode == "login" then
    return wrk.format("POST", path, headers, form)
  elseif mode == "register" then
    counter = counter + 1
    local name = "r" .. nonce .. "-" .. tid .. "-" .. counter
    return wrk.format("POST", path, headers, '{"username":"' .. name .. '","email":"' .. name
      .. '@example.com","password":"bench password 123"}')
  elseif mode == "json" then
    return wrk.format("POST", path, headers, body)
  end
end

function response(status, _headers, _body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, _requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for code, n in pairs(counts) do
      merged[code] = (merged[code] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(merged) do
    table.insert(parts, string.format('"%d":%d', code, n))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"socket_errors":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.max,
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(parts, ",")
  ))
end
