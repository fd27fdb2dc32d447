"""The HTML of the emulated Intuit authorization page and its error page, and the company page on which a person
plays the QuickBooks user (records a payment) in a local demo."""

from __future__ import annotations

from typing import Any

import jinja2

_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; background: #f4f5f8; margin: 0; color: #393a3d; }
main { max-width: 30rem; margin: 3rem auto; background: #fff; border-radius: 8px; padding: 2rem;
       box-shadow: 0 1px 4px rgba(0,0,0,.12); }
h1 { font-size: 1.3rem; margin-top: 0; } .brand { color: #2ca01c; font-weight: 700; }
fieldset { border: 1px solid #d4d7dc; border-radius: 6px; margin: 1rem 0; padding: .8rem 1rem; }
legend { font-weight: 600; padding: 0 .3rem; } label { display: block; margin: .35rem 0; }
input[type=text], input[type=email] { width: 100%; box-sizing: border-box; padding: .45rem; margin-top: .2rem; }
.scopes { font-size: .85rem; color: #6b6c72; } .actions { display: flex; gap: .8rem; justify-content: flex-end; }
button { padding: .55rem 1.3rem; border-radius: 4px; border: 1px solid #8d9096; background: #fff; cursor: pointer; }
button.primary { background: #2ca01c; border-color: #2ca01c; color: #fff; }
.error { color: #d52b1e; }
"""

_AUTHORIZE = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Connect to QuickBooks (emulator)</title>
<style>{{ style }}</style></head>
<body><main>
<p class="brand">intuit quickbooks &middot; local emulator</p>
<h1>Connect your QuickBooks company to {{ client_id }}</h1>
<p class="scopes">This app is asking for: {{ scopes | join(", ") }}</p>
<form method="post" action="/connect/oauth2">
  <input type="hidden" name="client_id" value="{{ client_id }}">
  <input type="hidden" name="redirect_uri" value="{{ redirect_uri }}">
  <input type="hidden" name="response_type" value="{{ response_type }}">
  <input type="hidden" name="scope" value="{{ scope }}">
  <input type="hidden" name="state" value="{{ state }}">
  <fieldset><legend>Sign in as</legend>
    <label>Email <input type="email" name="user_email" value="{{ user_email }}" required></label>
  </fieldset>
  <fieldset><legend>Choose a company</legend>
    {% for company in companies %}
    <label><input type="radio" name="realm_id" value="{{ company.realm_id }}"{% if loop.first %} checked{% endif %}>
      {{ company.name }} <span class="scopes">(realm {{ company.realm_id }})</span></label>
    {% endfor %}
    <label><input type="radio" name="realm_id" value="new"{% if not companies %} checked{% endif %}>
      Create a new company named
      <input type="text" name="company_name" value="{{ default_company_name }}"></label>
  </fieldset>
  <div class="actions">
    <button type="submit" name="action" value="cancel">Cancel</button>
    <button type="submit" name="action" value="authorize" class="primary">Authorize</button>
  </div>
</form>
</main></body></html>"""
)

_ERROR = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Something went wrong</title>
<style>{{ style }}</style></head>
<body><main>
<p class="brand">intuit quickbooks &middot; local emulator</p>
<h1 class="error">We can't connect this app</h1>
<p>{{ message }}</p>
<p class="scopes">Error: {{ error }}</p>
</main></body></html>"""
)


def authorize_page(**context: Any) -> str:
    return _AUTHORIZE.render(style=_STYLE, **context)


def error_page(error: str, message: str) -> str:
    return _ERROR.render(style=_STYLE, error=error, message=message)


_BOOKS = _ENV.from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ company_name }}: invoices (QuickBooks emulator)</title>
<style>{{ style }} main { max-width: 56rem; } table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #e3e5e8; } td form { display: flex; gap: .4rem; }
input[type=number] { width: 7rem; padding: .3rem; }</style></head>
<body><main>
<p class="brand">intuit quickbooks &middot; local emulator</p>
<h1>{{ company_name }} <span class="scopes">(company {{ realm_id }})</span></h1>
<p>What a QuickBooks user does in their company: record a client's payment against an invoice (QuickBooks then
tells the connected app with a webhook), or disconnect the app.</p>
{% if message %}<p role="status">{{ message }}</p>{% endif %}
<table><caption class="scopes">Invoices</caption>
<thead><tr><th scope="col">No.</th><th scope="col">Customer</th><th scope="col">Total</th><th scope="col">Balance</th>
<th scope="col">Receive payment</th></tr></thead>
<tbody>
{% for invoice in invoices %}
<tr><td>{{ invoice.number }}</td><td>{{ invoice.customer }}</td><td>{{ invoice.total }}</td><td>{{ invoice.balance }}</td>
<td>{% if invoice.open %}<form method="post" action="/__admin/companies/{{ realm_id }}/books/payments">
<input type="hidden" name="invoice_id" value="{{ invoice.id }}">
<label>Amount <input type="number" name="amount" min="0.01" step="0.01" max="{{ invoice.balance }}"
 value="{{ invoice.balance }}" required></label>
<button class="primary" type="submit">Receive payment for {{ invoice.number }}</button></form>
{% else %}nothing due{% endif %}</td></tr>
{% else %}<tr><td colspan="5">No invoices yet.</td></tr>{% endfor %}
</tbody></table>
<h2>Apps</h2>
<p>A QuickBooks user can disconnect an app from the company (QuickBooks: Apps &rarr; My apps); the app's
authorization stops working at once.</p>
<form method="post" action="/__admin/companies/{{ realm_id }}/books/revoke">
<button type="submit">Disconnect every app from {{ company_name }}</button></form>
</main></body></html>"""
)


def books_page(**context: Any) -> str:
    return _BOOKS.render(style=_STYLE, **context)
