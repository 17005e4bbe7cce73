"""The demo upload page of the local stack (``make run``): plain HTML and JS, no build step.

``server.py`` serves the page on its own origin and holds the dev API key server-side: each page
view asks it (``POST /token``) for a short-lived upload token, the documented browser flow. The
page then talks to the API on the API's origin (CORS), never seeing the key.
"""
