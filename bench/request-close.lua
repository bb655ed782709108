-- bench/request.lua's requests (a random 6-digit id in the query and in X-Request-Id) with
-- `Connection: close`: the proxy closes after each response and wrk opens a new connection — with
-- TLS, a new handshake — for the next request (bench/tls.sh checks it does).
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
    local id = tostring(math.random(100000, 999999))
    return wrk.format("GET", "/home?id=" .. id, { ["X-Request-Id"] = id, ["Connection"] = "close" })
end
