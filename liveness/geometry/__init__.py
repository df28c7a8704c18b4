"""Face geometry shared by the liveness, challenge and verification code (no model calls)."""
