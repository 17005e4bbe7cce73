"""Behaviour of the image pipeline on generated inputs: what comes out, and what is refused."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageFile, PngImagePlugin

from tests import samples
from workers.pipelines import run_pipeline_for
from workers.pipelines.base import PipelineResult, ProcessingError
from workers.pipelines.image import ImageLimits, process_image, thumbnail_size

Run = Callable[..., PipelineResult]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Write ``data`` to a file and run the pipeline on it with a generous deadline."""

    def _run(
        data: bytes, limits: ImageLimits | None = None, deadline: float | None = None
    ) -> PipelineResult:
        src = tmp_path / "upload.bin"
        src.write_bytes(data)
        when = time.monotonic() + 60 if deadline is None else deadline
        return process_image(src, tmp_path / "out", limits or ImageLimits(), when)

    return _run


def _failure(run: Run, data: bytes, **limits: object) -> ProcessingError:
    with pytest.raises(ProcessingError) as caught:
        run(data, ImageLimits(**limits))  # type: ignore[arg-type]
    return caught.value


def _by_name(result: PipelineResult) -> dict[str, Path]:
    return {artifact.name: artifact.path for artifact in result.artifacts}


def _close_to(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 24) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


# --- outputs ------------------------------------------------------------------------------------


def test_sample_carries_the_metadata_the_pipeline_must_strip() -> None:
    data = samples.jpeg_with_exif_gps_orientation6()
    for marker in (b"Exif", b"GPS", b"xmpmeta", samples.SECRET_COMMENT, b"ICC_PROFILE"):
        assert marker in data
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)


def test_exif_gps_xmp_comment_and_icc_are_gone_from_every_output(run: Run) -> None:
    result = run(samples.jpeg_with_exif_gps_orientation6())

    images = [a for a in result.artifacts if a.content_type.startswith("image/")]
    assert [a.name for a in images] == ["sanitized.jpg", "thumb-1024.webp", "thumb-256.webp"]
    for artifact in images:
        data = artifact.path.read_bytes()
        for marker in (b"Exif", b"GPS", b"xmpmeta", samples.SECRET_XMP_CREATOR,
                       samples.SECRET_COMMENT, b"ICC_PROFILE", b"SampleCam"):
            assert marker not in data, (artifact.name, marker)
        with Image.open(artifact.path) as image:
            assert len(image.getexif()) == 0
            assert not {"exif", "xmp", "comment", "icc_profile"} & set(image.info)
    assert result.info["removed_metadata"] == ["comment", "exif", "gps", "icc_profile", "xmp"]


def test_sanitized_copy_is_rotated_upright(run: Run) -> None:
    result = run(samples.jpeg_with_exif_gps_orientation6(w=80, h=40))

    with Image.open(_by_name(result)["sanitized.jpg"]) as image:
        assert image.size == (40, 80)
        rgb = image.convert("RGB")
        assert _close_to(rgb.getpixel((20, 10)), samples.RED)  # type: ignore[arg-type]
        assert _close_to(rgb.getpixel((20, 70)), samples.BLUE)  # type: ignore[arg-type]
    assert (result.info["width"], result.info["height"]) == (40, 80)
    with Image.open(_by_name(result)["thumb-256.webp"]) as thumb:
        assert thumb.size == (40, 80)


def test_info_json_matches_the_returned_info(run: Run) -> None:
    result = run(samples.png_bytes(64, 48))

    on_disk = json.loads(_by_name(result)["info.json"].read_text())
    assert on_disk == result.info == {
        "width": 64, "height": 48, "format": "PNG", "frames": 1, "removed_metadata": [],
    }
    assert result.artifacts[-1].name == "info.json"


@pytest.mark.parametrize(
    ("make", "name", "fmt"),
    [
        (samples.jpeg_bytes, "sanitized.jpg", "JPEG"),
        (samples.png_bytes, "sanitized.png", "PNG"),
        (samples.gif_bytes, "sanitized.gif", "GIF"),
        (samples.webp_bytes, "sanitized.webp", "WEBP"),
    ],
)
def test_sanitized_copy_keeps_the_format_family(
    run: Run, make: Callable[[], bytes], name: str, fmt: str
) -> None:
    result = run(make())

    with Image.open(_by_name(result)[name]) as image:
        assert image.format == fmt
    assert result.info["format"] == fmt


def test_thumbnails_fit_the_configured_sizes(run: Run) -> None:
    result = run(samples.png_bytes(2000, 1000))

    sizes = {}
    for name in ("thumb-256.webp", "thumb-1024.webp"):
        with Image.open(_by_name(result)[name]) as thumb:
            assert thumb.format == "WEBP"
            sizes[name] = thumb.size
    assert sizes == {"thumb-256.webp": (256, 128), "thumb-1024.webp": (1024, 512)}


def test_thumbnails_follow_custom_sizes_and_never_upscale(run: Run) -> None:
    result = run(samples.png_bytes(300, 100), ImageLimits(thumbnail_sizes=(128, 512)))

    names = sorted(_by_name(result))
    assert names == ["info.json", "sanitized.png", "thumb-128.webp", "thumb-512.webp"]
    with Image.open(_by_name(result)["thumb-512.webp"]) as thumb:
        assert thumb.size == (300, 100)
    with Image.open(_by_name(result)["thumb-128.webp"]) as thumb:
        assert thumb.size == (128, 43)


def test_photo_sized_jpeg_gives_a_full_size_copy_and_thumbnails_of_the_same_picture(run: Run) -> None:
    picture = Image.new("RGB", (3000, 2000), samples.BLUE)
    picture.paste(samples.RED, (0, 0, 1500, 2000))  # left half red, right half blue
    buf = io.BytesIO()
    picture.save(buf, "JPEG", quality=90)

    result = run(buf.getvalue())

    expected = {"sanitized.jpg": (3000, 2000), "thumb-1024.webp": (1024, 683), "thumb-256.webp": (256, 171)}
    for name, size in expected.items():
        with Image.open(_by_name(result)[name]) as image:
            assert image.size == size, name
            rgb = image.convert("RGB")
            width, height = size
            assert _close_to(rgb.getpixel((width // 4, height // 2)), samples.RED), name  # type: ignore[arg-type]
            assert _close_to(rgb.getpixel((3 * width // 4, height // 2)), samples.BLUE), name  # type: ignore[arg-type]


def test_thumbnails_of_a_sideways_photo_are_upright(run: Run) -> None:
    result = run(samples.jpeg_with_exif_gps_orientation6(w=1200, h=600))

    for name, size in {"thumb-1024.webp": (512, 1024), "thumb-256.webp": (128, 256)}.items():
        with Image.open(_by_name(result)[name]) as thumb:
            assert thumb.size == size
            rgb = thumb.convert("RGB")
            assert _close_to(rgb.getpixel((size[0] // 2, size[1] // 4)), samples.RED), name  # type: ignore[arg-type]
            assert _close_to(rgb.getpixel((size[0] // 2, 3 * size[1] // 4)), samples.BLUE), name  # type: ignore[arg-type]


def _grey_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (600, 400), 90).save(buf, "JPEG")
    return buf.getvalue()


def _grey_png_with_transparent_value() -> bytes:
    image = Image.new("L", (600, 400), 90)
    image.paste(0, (0, 0, 300, 400))  # left half: the transparent grey value
    buf = io.BytesIO()
    image.save(buf, "PNG", transparency=0)
    return buf.getvalue()


def _grey_alpha_png() -> bytes:
    image = Image.new("LA", (600, 400), (90, 255))
    image.paste((90, 0), (0, 0, 300, 400))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _palette_gif_with_transparency() -> bytes:
    image = Image.new("P", (600, 400), 1)
    image.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    image.paste(0, (0, 0, 300, 400))
    buf = io.BytesIO()
    image.save(buf, "GIF", transparency=0)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("make", "mode", "right_half"),
    [
        (_grey_jpeg, "RGB", (90, 90, 90)),
        (_grey_png_with_transparent_value, "RGBA", (90, 90, 90, 255)),
        (_grey_alpha_png, "RGBA", (90, 90, 90, 255)),
        (_palette_gif_with_transparency, "RGBA", (200, 30, 30, 255)),
    ],
    ids=["grey-jpeg", "grey-png-trns", "grey-alpha-png", "palette-gif-trns"],
)
def test_thumbnails_keep_grey_colours_and_transparency(
    run: Run, make: Callable[[], bytes], mode: str, right_half: tuple[int, ...]
) -> None:
    result = run(make())

    for name, size in {"thumb-256.webp": (256, 171), "thumb-1024.webp": (600, 400)}.items():
        with Image.open(_by_name(result)[name]) as thumb:
            assert (thumb.mode, thumb.size) == (mode, size), name
            width, height = size
            assert _close_to(thumb.getpixel((3 * width // 4, height // 2)), right_half, 6), name  # type: ignore[arg-type]
            if mode == "RGBA":
                assert thumb.getpixel((width // 4, height // 2))[3] == 0, name  # type: ignore[index]


def test_thumbnail_sizes_round_like_pillows_thumbnail() -> None:
    for width, height, box in [(3000, 2000, 1024), (2000, 3000, 256), (200, 101, 100), (101, 200, 100),
                               (4032, 3024, 1024), (10000, 3, 256), (3, 10000, 256), (999, 999, 10)]:
        expected = Image.new("L", (width, height))
        expected.thumbnail((box, box), Image.Resampling.NEAREST)
        assert thumbnail_size(width, height, box) == expected.size, (width, height, box)


def test_png_text_chunks_are_removed(run: Run) -> None:
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "Secret Person")
    text.add_itxt("Comment", "hidden note", zip=True)
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (1, 2, 3)).save(buf, "PNG", pnginfo=text)

    result = run(buf.getvalue())

    data = _by_name(result)["sanitized.png"].read_bytes()
    assert b"Secret Person" not in data and b"tEXt" not in data and b"iTXt" not in data
    assert result.info["removed_metadata"] == ["png_text"]


def test_animation_frames_are_kept_in_order(run: Run) -> None:
    result = run(samples.animated_gif_bytes(frames=3))

    assert result.info["frames"] == 3
    with Image.open(_by_name(result)["sanitized.gif"]) as image:
        assert getattr(image, "n_frames", 1) == 3
        for index in range(3):
            image.seek(index)
            color = image.convert("RGB").getpixel((5, 5))
            assert color == samples.ANIMATION_COLORS[index]
            assert image.info["duration"] == 100


def test_transparent_animation_clears_the_canvas_between_frames(run: Run) -> None:
    first = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    first.paste((255, 0, 0, 255), (0, 0, 10, 10))
    second = Image.new("RGBA", (20, 20), (0, 0, 0, 0))
    second.paste((0, 0, 255, 255), (10, 10, 20, 20))
    buf = io.BytesIO()
    first.save(buf, "GIF", save_all=True, append_images=[second], duration=80, disposal=2)

    result = run(buf.getvalue())

    with Image.open(_by_name(result)["sanitized.gif"]) as image:
        image.seek(1)
        frame = image.convert("RGBA")
        assert frame.getpixel((2, 2))[3] == 0  # type: ignore[index]  # red square gone
        assert frame.getpixel((15, 15)) == (0, 0, 255, 255)


def test_multi_picture_jpeg_keeps_only_the_main_picture(run: Run) -> None:
    main, extra = Image.new("RGB", (30, 20), samples.RED), Image.new("RGB", (30, 20), samples.BLUE)
    buf = io.BytesIO()
    main.save(buf, "MPO", save_all=True, append_images=[extra])

    result = run(buf.getvalue())

    with Image.open(_by_name(result)["sanitized.jpg"]) as image:
        assert image.format == "JPEG" and getattr(image, "n_frames", 1) == 1
        pixel = image.convert("RGB").getpixel((5, 5))
        assert _close_to(pixel, samples.RED)  # type: ignore[arg-type]
    assert (result.info["format"], result.info["frames"]) == ("JPEG", 1)
    assert result.info["removed_metadata"] == ["mpo_images"]


def test_colour_profile_is_baked_into_srgb_pixels_before_it_is_dropped(run: Run) -> None:
    buf = io.BytesIO()
    icc = samples.swapped_primaries_icc_profile()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buf, "PNG", icc_profile=icc)

    result = run(buf.getvalue())

    sanitized = _by_name(result)["sanitized.png"]
    with Image.open(sanitized) as image:
        assert "icc_profile" not in image.info
        # Under the swapped profile the stored red means blue; dropping it would leave red.
        pixel = image.convert("RGB").getpixel((8, 8))
        assert _close_to(pixel, (30, 30, 200), 3)  # type: ignore[arg-type]
    assert b"iCCP" not in sanitized.read_bytes()
    assert result.info["removed_metadata"] == ["icc_profile"]


# --- refusals -----------------------------------------------------------------------------------


def test_png_bomb_is_refused_from_the_header_without_decoding(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    original_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    data = samples.png_bomb_bytes(30000)
    assert len(data) < 200_000

    started = time.monotonic()
    error = _failure(run, data)

    assert error.code == "IMAGE_TOO_MANY_PIXELS" and error.permanent
    assert time.monotonic() - started < 1.0
    assert loads == []


def test_bomb_below_pillows_own_limit_is_refused_by_ours(run: Run) -> None:
    data = samples.png_bomb_bytes(8000)  # 64 M pixels: Pillow's default does not even warn (89 M)

    error = _failure(run, data)

    assert error.code == "IMAGE_TOO_MANY_PIXELS"
    # Pillow's limit is set to our 50 M budget for the run, its warning raised: refused on open.
    assert error.step == "open_image"


def test_pillows_decompression_bomb_error_gets_the_same_code(run: Run) -> None:
    error = _failure(run, samples.png_bomb_bytes(30000), max_pixels=10**12,
                     max_animation_pixels=10**12)

    assert error.code == "IMAGE_TOO_MANY_PIXELS"
    assert error.step == "open_image"


def test_truncated_jpeg_is_corrupt_and_truncation_stays_strict(run: Run) -> None:
    error = _failure(run, samples.truncated_jpeg_bytes())

    assert (error.code, error.step, error.permanent) == ("IMAGE_CORRUPT", "decode_frames", True)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_pipeline_refuses_to_decode_if_truncated_images_were_allowed(
    run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)

    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        run(samples.truncated_jpeg_bytes())


def test_frame_budget(run: Run) -> None:
    error = _failure(run, samples.animated_gif_bytes(frames=5), max_frames=4)

    assert (error.code, error.permanent) == ("IMAGE_TOO_MANY_FRAMES", True)


def test_whole_animation_pixel_budget(run: Run) -> None:
    # 5 frames of 32x24 = 3,840 pixels: each frame passes, the animation does not.
    error = _failure(run, samples.animated_gif_bytes(frames=5), max_animation_pixels=3000)

    assert (error.code, error.step) == ("IMAGE_TOO_MANY_PIXELS", "check_budgets")


def test_animation_budget_does_not_apply_to_still_images(run: Run) -> None:
    result = run(samples.png_bytes(64, 48), ImageLimits(max_pixels=5000, max_animation_pixels=100))

    assert result.info["frames"] == 1


def _bmp_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "BMP")
    return buf.getvalue()


@pytest.mark.parametrize(
    "make",
    [
        samples.svg_bytes, samples.html_bytes, samples.zip_bytes, samples.elf_bytes, _bmp_bytes,
        lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
    ],
)
def test_other_formats_are_not_allowed(run: Run, make: Callable[[], bytes]) -> None:
    error = _failure(run, make())

    assert (error.code, error.step) == ("IMAGE_FORMAT_NOT_ALLOWED", "open_image")
    assert error.permanent


def test_broken_header_of_an_allowed_format_is_corrupt(run: Run) -> None:
    error = _failure(run, b"\x89PNG\r\n\x1a\n" + bytes(64))

    assert error.code == "IMAGE_CORRUPT"


def test_passed_deadline_is_a_transient_timeout(run: Run) -> None:
    with pytest.raises(ProcessingError) as caught:
        run(samples.png_bytes(), deadline=time.monotonic() - 1)

    assert (caught.value.code, caught.value.permanent) == ("PROCESSING_TIMEOUT", False)
    assert caught.value.step == "check_structure"  # the first step: the byte scan


def test_failure_leaves_no_artifacts_and_no_path_in_the_public_message(
    run: Run, tmp_path: Path
) -> None:
    error = _failure(run, samples.truncated_jpeg_bytes())

    assert str(tmp_path) not in error.message and "upload.bin" not in error.message
    assert list((tmp_path / "out").iterdir()) == []


def test_unexpected_error_names_its_step_and_removes_what_was_written(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setitem(Image.SAVE, "WEBP", disk_full)  # the WebP writer: after sanitized.jpg

    with pytest.raises(OSError) as caught:
        run(samples.jpeg_bytes())

    assert not isinstance(caught.value, ProcessingError)
    assert "pipeline step: write_thumbnails" in caught.value.__notes__
    assert list((tmp_path / "out").iterdir()) == []


def test_dispatch_by_kind(tmp_path: Path) -> None:
    src = tmp_path / "a.gif"
    src.write_bytes(samples.gif_bytes())

    result = run_pipeline_for("image", src, tmp_path / "out", time.monotonic() + 60)

    assert result.info["format"] == "GIF"
    with pytest.raises(ProcessingError) as caught:
        run_pipeline_for("video", src, tmp_path / "out2", time.monotonic() + 60)
    assert caught.value.code == "UNSUPPORTED_MEDIA_TYPE"
