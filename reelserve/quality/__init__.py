"""``reelserve bench quality``: what each acceleration costs in quality, next to what it saves in time."""
