"""What students and instructors get: the student and instructor editions (:mod:`.editions`), an nbgrader
course folder (:mod:`.nbgrader_course`), and the exercise checkers (:mod:`.exercises`)."""
