"""Runs inside GIMP 3 (python-fu-eval batch mode): builds images, calls colord's procedure, records.

The job file named by $COLORD_GIMP_JOB lists cases. For each case this script builds an image from
raw RGBA8 layer files, writes (or removes) the connection file named by $COLORD_CONNECTION_FILE,
calls `python-fu-colord-colorize` non-interactively with the selected drawables and arguments, and
writes what it saw into the case's output folder: `observations.json` (statuses, messages, call
times, the layer tree before and after) and every layer's pixels before and after, as R'G'B'A u8.
A case with `direct_calls` also sends the daemon the same bytes itself after each call, for timing.

Only the standard library and GIMP's own PyGObject are available here.
"""

import json
import os
import sys
import time
from pathlib import Path

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

PROCEDURE = "python-fu-colord-colorize"
PIXEL_FORMAT = "R'G'B'A u8"
LAYER_TYPES = {"rgb": Gimp.ImageType.RGBA_IMAGE, "gray": Gimp.ImageType.GRAYA_IMAGE}


def build_layers(image, entries, parent, by_name, pixel_dir):
    """Insert `entries` (top first) under `parent`.

    A group entry holds its own `layers`; a layer entry with `mask` gets a white mask by that name.
    """
    for position, entry in enumerate(entries):
        if "layers" in entry:
            layer = Gimp.GroupLayer.new(image, entry["name"])
            image.insert_layer(layer, parent, position)
            build_layers(image, entry["layers"], layer, by_name, pixel_dir)
        else:
            width, height = entry["width"], entry["height"]
            layer = Gimp.Layer.new(
                image,
                entry["name"],
                width,
                height,
                LAYER_TYPES[entry.get("base_type", "rgb")],
                100.0,
                Gimp.LayerMode.NORMAL,
            )
            image.insert_layer(layer, parent, position)
            layer.set_offsets(entry["x"], entry["y"])
            buffer = layer.get_buffer()
            data = (pixel_dir / entry["pixels"]).read_bytes()
            buffer.set(Gegl.Rectangle.new(0, 0, width, height), PIXEL_FORMAT, data)
            buffer.flush()
            if entry.get("mask"):
                mask = layer.create_mask(Gimp.AddMaskType.WHITE)
                layer.add_mask(mask)
                by_name[entry["mask"]] = mask
        by_name[entry["name"]] = layer


def layer_tree(image):
    """Every layer in depth-first order (top first), with its place in the tree and geometry."""
    records = []

    def walk(layers, parent_name):
        for position, layer in enumerate(layers):
            _, x, y = layer.get_offsets()
            records.append(
                {
                    "name": layer.get_name(),
                    "parent": parent_name,
                    "position": position,
                    "group": layer.is_group(),
                    "x": x,
                    "y": y,
                    "width": layer.get_width(),
                    "height": layer.get_height(),
                    "mode": layer.get_mode().value_nick,
                    "visible": layer.get_visible(),
                    "layer": layer,
                }
            )
            if layer.is_group():
                walk(layer.get_children(), layer.get_name())

    walk(image.get_layers(), None)
    return records


def snapshot(image, out_dir, tag):
    """The layer tree as JSON-able dicts; each non-group layer's pixels go to `<tag>_<i>.rgba`."""
    tree = layer_tree(image)
    for index, record in enumerate(tree):
        layer = record.pop("layer")
        if not record["group"]:
            rect = Gegl.Rectangle.new(0, 0, record["width"], record["height"])
            pixels = layer.get_buffer().get(rect, 1.0, PIXEL_FORMAT, Gegl.AbyssPolicy.CLAMP)
            name = f"{tag}_{index}.rgba"
            (out_dir / name).write_bytes(bytes(pixels))
            record["pixels"] = name
    return tree


def composite(image, out_dir, tag):
    """The image as the artist sees it (visible layers merged, in a copy), as `<tag>.rgba`."""
    copy = image.duplicate()
    try:
        merged = copy.merge_visible_layers(Gimp.MergeType.CLIP_TO_IMAGE)
        rect = Gegl.Rectangle.new(0, 0, copy.get_width(), copy.get_height())
        pixels = merged.get_buffer().get(rect, 1.0, PIXEL_FORMAT, Gegl.AbyssPolicy.NONE)
    finally:
        copy.delete()
    name = f"{tag}.rgba"
    (out_dir / name).write_bytes(bytes(pixels))
    return name


def set_connection(text):
    path = Path(os.environ["COLORD_CONNECTION_FILE"])
    if text is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(text)
        path.chmod(0o600)


def call_procedure(image, drawables, case):
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    if procedure is None:
        raise RuntimeError(f"GIMP has no procedure {PROCEDURE}: the plug-in was not registered")
    config = procedure.create_config()
    run_mode = case.get("run_mode", "noninteractive")
    config.set_property("run-mode", getattr(Gimp.RunMode, run_mode.upper()))
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    config.set_property("reference", case["by_name"].get(case["reference"]))
    for name, value in case.get("options", {}).items():
        config.set_property(name, value)
    started = time.perf_counter()
    result = procedure.run(config)
    elapsed = time.perf_counter() - started
    status = result.index(0)
    message = result.index(1) if result.length() > 1 else None
    return status.value_nick, message, elapsed


def ask_daemon_directly(case, before, out_dir):
    """Send the daemon the bytes the plug-in read, with the installed wire client; its timings.

    Timing runs pair each procedure call with this request, made at once under the same load, to
    tell the daemon's own processing time apart from what GIMP and the plug-in add.
    """
    import colord_wire  # the copy installed beside the plug-in (see main)

    def wire_image(name):
        record = next(r for r in before if r["name"] == name)
        data = (out_dir / record["pixels"]).read_bytes()
        return colord_wire.Image(record["width"], record["height"], "RGBA8", data)

    options = case.get("options", {})
    with colord_wire.WireClient.from_connection_file() as client:
        _, timings = client.colorize(
            wire_image(case["select"][0]),
            wire_image(case["reference"]) if case["reference"] else None,
            working_size=options.get("working-size") or None,  # 0: automatic
            keep_lines=options.get("keep-lines", True),
        )
    return timings


def run_case(case, pixel_dir, out_root):
    out_dir = out_root / case["name"]
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = case["canvas"]
    base_type = case.get("base_type", "rgb")
    image = Gimp.Image.new_with_precision(
        width,
        height,
        getattr(Gimp.ImageBaseType, base_type.upper()),
        getattr(Gimp.Precision, case.get("precision", "u8_non_linear").upper()),
    )
    by_name = {}
    build_layers(image, case["layers"], None, by_name, pixel_dir)
    case["by_name"] = by_name
    before = snapshot(image, out_dir, "before")
    composite_before = composite(image, out_dir, "composite_before")
    set_connection(case.get("connection"))
    drawables = [by_name[name] for name in case["select"]]
    statuses, messages, elapsed, direct_timings = [], [], [], []
    for _ in range(case.get("repeat", 1)):
        status, message, seconds = call_procedure(image, drawables, case)
        statuses.append(status)
        messages.append(message)
        elapsed.append(seconds)
        if case.get("direct_calls"):
            direct_timings.append(ask_daemon_directly(case, before, out_dir))
    after = snapshot(image, out_dir, "after")
    observations = {
        "composite_before": composite_before,
        "composite_after": composite(image, out_dir, "composite_after"),
        "selected_after": [layer.get_name() for layer in image.get_selected_layers()],
        "statuses": statuses,
        "messages": messages,
        "elapsed_s": elapsed,
        "direct_timings": direct_timings,
        "before": before,
        "after": after,
    }
    (out_dir / "observations.json").write_text(json.dumps(observations, indent=1))
    image.delete()


def describe_procedure():
    """How the procedure is registered: menu, image types and each argument's type and range."""
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    arguments = []
    for spec in procedure.get_arguments():
        argument = {"name": spec.name, "type": spec.value_type.name}
        for field in ("default_value", "minimum", "maximum"):
            value = getattr(spec, field, None)
            if isinstance(value, (bool, int, float, str)):
                argument[field] = value
        arguments.append(argument)
    return {
        "menu_label": procedure.get_menu_label(),
        "menu_paths": list(procedure.get_menu_paths()),
        "image_types": procedure.get_image_types(),
        "arguments": arguments,
    }


def main():
    job = json.loads(Path(os.environ["COLORD_GIMP_JOB"]).read_text())
    sys.path.insert(0, job["plugin_dir"])
    pixel_dir = Path(job["pixel_dir"])
    out_root = Path(job["out_dir"])
    (out_root / "procedure.json").write_text(json.dumps(describe_procedure(), indent=1))
    for case in job["cases"]:
        run_case(case, pixel_dir, out_root)
    (out_root / "done").write_text("ok")


main()
