"""The runtime actions face: a run that trains a model and saves a value,
then the model's prediction, the value and the run's status."""

import json

from websockets.sync.client import connect

from common import HEADERS, WS_URL

CODE = """import sandlot
class Double:
    def predict(self, xs):
        return [2 * x for x in xs]
sandlot.save_model('double', Double())
sandlot.set_placeholder('greeting', 'hello')
print('trained')
"""

with connect(WS_URL + "/", additional_headers=HEADERS) as ws:
    def ask(request):
        ws.send(json.dumps(request))
        return json.loads(ws.recv())

    started = ask({"action": "run", "python": {"files": [{"filename": "main.py", "content": CODE}], "mainfile": "main.py"}})
    session = started["sessionId"]
    while True:  # output is pushed as it is written, then the end
        pushed = json.loads(ws.recv())
        if pushed["action"] == "output":
            print(pushed["data"], end="")
        elif pushed["action"] == "finished":
            print("finished:", pushed["status"], pushed["exitCode"])
            break
    print("prediction:", ask({"action": "run_model", "model": {"sessionId": session, "name": "double", "data": [1, 2, 3]}})["prediction"])
    print("greeting:", ask({"action": "get_placeholder", "placeholder": {"sessionId": session, "name": "greeting"}})["value"])
    print("status:", ask({"action": "status", "sessionId": session})["status"])
