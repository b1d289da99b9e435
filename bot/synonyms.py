"""A starter list of customer-service synonyms, folded to one word before matching."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

# Each group folds to its first word. Groups stay narrow on purpose: folding words that a KB must tell apart
# (退款 vs 退货, 发货 vs 到货) would make entries collide, so only true equivalents are listed.
STARTER_SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("退款", "退钱", "返款", "退费"),
    ("发票", "开票", "开发票", "发票单"),
    ("快递", "物流", "快件", "速递"),
    ("运费", "邮费", "快递费", "配送费"),
    ("密码", "口令"),
    ("修改", "更改", "改", "变更", "更换"),
    ("取消", "撤销", "撤单"),
    ("账号", "账户", "帐号", "帐户"),
    ("手机号", "手机号码", "电话号码"),
    ("付款", "支付", "付钱", "交钱"),
    ("注销", "销户"),
    ("优惠券", "优惠卷", "券"),
    ("质保", "保修"),
    ("客服", "售后客服"),
    ("包裹", "快递包裹"),
    ("password", "passcode"),
    ("refund", "reimburse", "reimbursement"),
    ("ship", "shipment"),
    ("parcel", "package"),
    ("invoice", "fapiao"),
    ("cancel", "cancellation"),
    ("coupon", "voucher"),
)


def synonym_map(groups: Iterable[Iterable[str]], *, normalize: Callable[[str], str]) -> dict[str, str]:
    """Word -> the group's first word. A word already folded by an earlier group keeps its first folding."""
    folded: dict[str, str] = {}
    for group in groups:
        words = [w for w in (normalize(g) for g in group) if w]
        if len(words) < 2:
            continue
        head = folded.get(words[0], words[0])
        for word in words:
            folded.setdefault(word, head)
    return {k: v for k, v in folded.items() if k != v}


def merged(*maps: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in maps:
        for k, v in m.items():
            out.setdefault(k, v)
    return out
