def bench(quick: bool = False) -> dict:
    return {}
