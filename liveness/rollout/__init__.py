"""Model versions in production: which version serves which request (pin, latest, canary,
shadow), and the operations that change it (load, promote, rollback)."""
