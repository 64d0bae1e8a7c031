"""Environments with the gymnasium API, and scripted or heuristic experts."""

import gymnasium as _gymnasium

for _id, _entry in (("tenfold/DarkRoom-v0", "tenfold.envs.dark_room:DarkRoomEnv"),
                    ("tenfold/DarkKeyDoor-v0", "tenfold.envs.dark_room:DarkKeyDoorEnv")):
    if _id not in _gymnasium.registry:  # idempotent under re-import
        _gymnasium.register(id=_id, entry_point=_entry, disable_env_checker=False)

