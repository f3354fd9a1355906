"""POST a JSON body to a Service from the e2e scripts, retrying refused connections:
kube-proxy refuses a Service for a moment after Ready, until it has synced the ready
endpoint (issue 20). An HTTP error is an answer and is raised at once."""

import json
import time
import urllib.error
import urllib.request

ATTEMPTS = 40


def post(url, body):
    """The decoded JSON answer to `body` (a str) posted to `url`."""
    for attempt in range(ATTEMPTS):
        request = urllib.request.Request(url, body.encode(), {"Content-Type": "application/json"})
        try:
            return json.load(urllib.request.urlopen(request, timeout=30))
        except urllib.error.HTTPError:
            raise
        except urllib.error.URLError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.5)
