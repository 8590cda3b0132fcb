"""``changeover watch``: the post-cutover suite on the seed's schedule, and the stability verdict.

``schedule`` turns the plan's watch steps into due times, ``state`` folds the watch's journal
events, ``daemon`` runs the rounds and escalates unacknowledged alerts, ``stability`` judges the
period after the cutover from the journal.
"""
