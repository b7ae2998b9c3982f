"""How closely an exported model follows the PyTorch generator: identical outputs, and token
agreement where they differ."""

from typing import Dict, List


def token_agreement(a: List[str], b: List[str]) -> Dict:
    """a, b: outputs for the same inputs. Returns the share of identical outputs and of equal tokens
    at equal positions (whitespace tokens; a length mismatch counts the missing ones as different)."""
    if len(a) != len(b):
        raise ValueError(f"{len(a)} outputs against {len(b)}")
    same_tok = total = 0
    for x, y in zip(a, b):
        xs, ys = x.split(), y.split()
        same_tok += sum(p == q for p, q in zip(xs, ys))
        total += max(len(xs), len(ys))
    return {"n": len(a), "identical": sum(x == y for x, y in zip(a, b)) / max(len(a), 1),
            "token_agreement": same_tok / max(total, 1)}
