"""Versioned fluoroscopy billing policy lists (data files, one source per entry); see hooks.rules.policy."""
