-- wrk script: POST /defer-task with a small body (bench/httpd/README.md).
wrk.method = "POST"
wrk.path = "/defer-task"
wrk.body = '{"task":"send-report","user":12345,"payload":"0123456789abcdef"}'
wrk.headers["Content-Type"] = "application/json"
