"""Drives the playground page (GET /playground) in Debian's Chromium through
Playwright, as a person would: picks Python, runs a program and reads its
streamed output, placeholders and status from the page; kills an endless
loop; answers a prompt through the STDIN box; keeps a screenshot.
Usage: playground.py BASE_URL SCREENSHOT.png. Prints a JSON report."""

import json
import sys

from playwright.sync_api import sync_playwright

BASE, SHOT = sys.argv[1], sys.argv[2]
PROGRAM = """import base64, struct, sys, zlib
import sandlot

def png(width, height, colour):
    rows = b''.join(b'\\0' + b''.join(bytes(colour(x, y)) for x in range(width)) for y in range(height))
    chunk = lambda kind, data: struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    return b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')

for i in range(3):
    print('line', i)
print('careful', file=sys.stderr)
sandlot.set_placeholder('scores', [{'name': 'ada', 'score': 3}, {'name': 'alan', 'score': 2}])
image = png(120, 40, lambda x, y: (2 * x, 6 * y, 200))
sandlot.set_placeholder('gradient', {'type': 'image/png', 'base64': base64.b64encode(image).decode()})
sandlot.set_placeholder('note', {'nested': [1, 2], 'flag': True})
"""

def texts(page, selector):
    return page.eval_on_selector_all(selector, "nodes => nodes.map(n => n.textContent)")

def run(page, code):
    page.fill("#code", code)
    page.click("#run")

# Waits use selectors, not wait_for_function: the page's Content-Security-Policy
# forbids the eval that Playwright's function polling needs, as it should.
DONE = "#status.ok, #status.failed"
RUNNING = "#status:text-is('running')"


def wait_status(page, selector):
    page.wait_for_selector(selector, timeout=30000)
    return page.text_content("#status")


def loaded_width(page, selector):
    page.wait_for_selector(selector)
    for _ in range(100):
        width = page.eval_on_selector(selector, "img => img.naturalWidth")
        if width:
            return width
        page.wait_for_timeout(50)
    return 0

report = {}
with sync_playwright() as playwright:
    browser = playwright.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"])
    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    page.goto(BASE + "/playground")
    page.wait_for_selector("#language option", state="attached")
    report["languages"] = page.eval_on_selector_all("#language option", "options => options.map(o => o.value)")
    page.select_option("#language", "python")

    run(page, PROGRAM)
    report["status"] = wait_status(page, DONE)
    report["stdout"] = "".join(texts(page, "#output .stdout"))
    report["stderr"] = "".join(texts(page, "#output .stderr"))
    report["placeholder_names"] = texts(page, "#placeholders h3")
    report["table_cells"] = texts(page, "#placeholders td")
    report["image_width"] = loaded_width(page, "#placeholders img")
    report["json"] = texts(page, "#placeholders pre")
    report["chart_width"] = loaded_width(page, "#chart img")
    page.screenshot(path=SHOT, full_page=True)

    run(page, "while True:\n    pass")
    wait_status(page, RUNNING)
    page.click("#kill")
    report["killed"] = wait_status(page, "#status.failed")

    run(page, "name = input('who? ')\nprint('hello', name)")
    wait_status(page, RUNNING)
    page.fill("#stdin", "grace")
    page.click("#send")
    report["stdin_status"] = wait_status(page, DONE)
    report["stdin_stdout"] = "".join(texts(page, "#output .stdout"))
    report["errors"] = errors
    browser.close()
print(json.dumps(report))
