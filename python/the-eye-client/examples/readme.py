# The program of docs/applications.md's "Python client" section, character for character (a test keeps
# the two identical and runs this against The Eye). THE_EYE_INGEST_KEY: data/demo-keys.env.
import os

from the_eye_client import TheEye, new_session_id

url = os.environ.get("THE_EYE_URL", "http://127.0.0.1:8000")
client = TheEye(url, os.environ["THE_EYE_INGEST_KEY"])
client.track(
    "form interaction",
    "submit",
    {"host": "shop.example", "path": "/signup", "form": {"plan": "pro"}},
    session_id=new_session_id(),  # a UUIDv7, as the browser SDK makes them
)  # returns at once: the event waits in a bounded queue
client.shutdown()  # delivers what is queued; raises Undelivered (e.g. a wrong key) if not
print(client.stats())
