# The old design's bridge, reduced to its core: a Python HTTP/1.1 keep-alive echo worker on
# loopback, standard library only. `ferry bench` and the `http` criterion bench run it with
# `python -c`. It prints its port on stdout, then answers every POST with its body.
import http.server
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(n)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Echo)
print(server.server_address[1], flush=True)
sys.stdout.close()
server.serve_forever()
