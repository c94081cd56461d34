"""The OpenID Connect provider's parts (issue 19): registered URIs, the authorization endpoint and its sign-in
page, discovery."""
