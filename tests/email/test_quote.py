"""Reply extraction over the separators Chinese and Western mail clients put above quoted history."""

from __future__ import annotations

import pytest

from connectors.email.quote import extract_reply, strip_signature

CASES = {
    "qq": '好的，谢谢！\n\n------------------ 原始邮件 ------------------\n发件人: "客服"<support@example.test>;\n'
    '发送时间: 2025年6月2日(星期一) 上午10:00\n收件人: "我"<me@qq.com>;\n主题: 订单\n\n已收到',
    "163": "好的，谢谢！\n\n\n发件人: 客服 <support@example.test>\n发送时间: 2025-06-02 10:00\n收件人: me@163.com\n"
    "主题: 订单\n\n已收到",
    "foxmail": "好的，谢谢！\n\n\n发件人：客服\n发送时间：2025-06-02 10:00\n收件人：me\n主题：订单\n\n已收到",
    "outlook_cn": "好的，谢谢！\n\n-----邮件原件-----\n发件人: 客服 [mailto:support@example.test]\n"
    "发送时间: 2025年6月2日 10:00\n"
    "收件人: me\n主题: 订单\n\n已收到",
    "gmail": "好的，谢谢！\n\nOn Mon, Jun 2, 2025 at 10:00 AM Support <support@example.test>\nwrote:\n\n> 已收到\n",
    "gmail_zh": "好的，谢谢！\n\n客服 <support@example.test> 于2025年6月2日周一 10:00写道：\n\n> 已收到\n",
    "outlook": "好的，谢谢！\n\n________________________________\nFrom: Support <support@example.test>\n"
    "Sent: Monday, June 2, 2025 10:00 AM\nTo: me\nSubject: order\n\n已收到",
    "outlook_plain": "好的，谢谢！\n\nFrom: Support [mailto:support@example.test]\n"
    "Sent: Monday, June 2, 2025\nTo: me\n\nold",
    "apple": "好的，谢谢！\n\n> On 2 Jun 2025, at 10:00, Support <support@example.test> wrote:\n>\n> 已收到\n",
    "apple_zh": "好的，谢谢！\n\n> 2025年6月2日 10:00，客服 <support@example.test> 写道：\n> \n> 已收到\n",
}


@pytest.mark.parametrize("client", sorted(CASES))
def test_reply_is_cut_above_quoted_history(client: str) -> None:
    assert extract_reply(CASES[client]) == "好的，谢谢！"


def test_mail_without_quote_is_kept_whole() -> None:
    text = "第一行\n\n第二行: 说明\n> 这不是引用的结尾\n还有正文"
    assert extract_reply(text) == text


def test_a_mail_that_is_only_a_quote_keeps_its_text() -> None:
    assert extract_reply("> only quoted\n> lines") == "> only quoted\n> lines"


def test_signature_and_device_lines_are_stripped() -> None:
    assert strip_signature("请尽快处理\n\n-- \n王小明\n电话 123") == "请尽快处理"
    assert strip_signature("请尽快处理\n\nSent from my iPhone") == "请尽快处理"
    assert strip_signature("请尽快处理\n\n发自我的iPhone") == "请尽快处理"
