-- SPDX-License-Identifier: MIT
--
-- bench/wrk/post.lua - wrk script of the http and observer scenarios
-- (bench/run.sh): every request is POST /defer-task with the same small
-- JSON body, and at the end one line "JSON {...}" with the figures run.sh
-- keeps, since wrk's own --latency table stops at p99:
--   requests, duration_us, rps, p50_us, p99_us, p999_us, max_us (wrk's
--   latency, microseconds), non2xx (responses whose status is not 2xx: wrk
--   counts them as status errors), err_connect, err_read, err_write,
--   err_timeout (socket errors), errors (all of these added up).
-- The done() hook gets the summary of every wrk thread merged.

wrk.method = "POST"
wrk.path = "/defer-task"
wrk.body = '{"task":"send-report","user":12345,"payload":"0123456789abcdef"}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
	local e = summary.errors
	local secs = summary.duration / 1e6
	io.write(string.format(
		'JSON {"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%.1f,"p99_us":%.1f,' ..
		'"p999_us":%.1f,"max_us":%.1f,"non2xx":%d,"err_connect":%d,"err_read":%d,' ..
		'"err_write":%d,"err_timeout":%d,"errors":%d}\n',
		summary.requests, summary.duration, summary.requests / secs,
		latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
		latency.max, e.status, e.connect, e.read, e.write, e.timeout,
		e.status + e.connect + e.read + e.write + e.timeout))
end
