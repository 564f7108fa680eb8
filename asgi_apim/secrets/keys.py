from asgi_apim.errors import CryptoError


def decryptor_for(encryption):  # replaced by the secrets issue
    def decrypt(value: str, key: str) -> str:
        raise CryptoError(f"{key}: encrypted values are not supported yet")

    return decrypt
