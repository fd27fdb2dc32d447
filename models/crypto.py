"""Encryption at rest for OAuth tokens (Fernet; several comma-separated keys allow rotation)."""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from qbo.oauth import TokenSet


class TokenDecryptionError(Exception):
    """A stored token could not be decrypted with any configured key (wrong or rotated-out key)."""


class TokenCipher:
    """Encrypts with the first key, decrypts with any, so keys can be rotated without downtime."""

    def __init__(self, keys: str) -> None:
        parsed = [Fernet(key.strip().encode()) for key in keys.split(",") if key.strip()]
        if not parsed:
            raise ValueError("TOKEN_ENCRYPTION_KEY holds no key")
        self._fernet = MultiFernet(parsed)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise TokenDecryptionError(
                "a stored QuickBooks token cannot be decrypted with the configured keys"
            ) from exc

    def __repr__(self) -> str:
        return "TokenCipher(<keys hidden>)"


def encrypted_token_columns(cipher: TokenCipher, tokens: TokenSet) -> dict[str, object]:
    """A token answer as the columns of a grant or a connection: the tokens encrypted, their lifetimes as times."""
    return {
        "access_token_enc": cipher.encrypt(tokens.access_token),
        "refresh_token_enc": cipher.encrypt(tokens.refresh_token),
        "access_expires_at": tokens.access_expires_at,
        "refresh_expires_at": tokens.refresh_expires_at,
        "refresh_hard_expires_at": tokens.refresh_hard_expires_at,
    }
