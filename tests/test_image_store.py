"""The store behind `response_format: url`: one caller cannot push out another's images, and
every caller's images together stay within a byte bound."""

import pytest

from speech2image.api.images import ImageStore, StoredImages, StoreFull


def test_a_caller_past_its_room_forgets_its_own_oldest_image_not_anothers():
    store = ImageStore(StoredImages(images_per_caller=2))
    theirs = store.put(b"their image", "b")
    mine = [store.put(f"my image {k}".encode(), "a") for k in range(33)]
    assert store.get(theirs) == b"their image"
    assert [store.get(name) for name in mine[-2:]] == [b"my image 31", b"my image 32"]
    assert store.get(mine[0]) is None


def test_a_callers_room_is_bounded_in_bytes_too():
    store = ImageStore(StoredImages(bytes_per_caller=10))
    first = store.put(b"123456", "a")
    second = store.put(b"789012", "a")  # 12 bytes together: the first goes
    assert store.get(first) is None and store.get(second) == b"789012"
    with pytest.raises(StoreFull, match="over the 10 bytes kept per caller"):
        store.put(b"x" * 11, "a")


def test_when_every_room_together_is_full_an_image_is_refused_not_made_room_for():
    store = ImageStore(StoredImages(max_bytes=10))
    theirs = store.put(b"12345678", "b")
    with pytest.raises(StoreFull, match="response_format=b64_json"):
        store.put(b"abcdef", "a")
    assert store.get(theirs) == b"12345678" and store.bytes == 8


def test_images_are_forgotten_after_their_time(monkeypatch):
    import speech2image.api.images as images

    now = [1000.0]
    monkeypatch.setattr(images.time, "monotonic", lambda: now[0])
    store = ImageStore(StoredImages(seconds=60))
    name = store.put(b"png", "a")
    now[0] += 59
    assert store.get(name) == b"png"
    now[0] += 2
    assert store.get(name) is None and store.bytes == 0
