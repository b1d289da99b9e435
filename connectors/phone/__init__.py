"""The phone channel: CTI call events and call-detail records become call messages and callback tickets."""
