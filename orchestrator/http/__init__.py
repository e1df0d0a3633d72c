"""HTTP under every protocol: transport (session, URLs, auth, one attempt, errors), retries,
the rate limiter and credentials (API keys, bearer tokens, Entra ID)."""
